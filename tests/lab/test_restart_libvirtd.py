"""libvirtd killed and restarted while the controller runs.

The controller must not crash, must make no decision while libvirt is unreachable (no acting on
stale data), must reconnect by itself, and must then carry on controlling the same guest with
ordinary steps. Runs last among the lab tests: it restarts the host's libvirtd.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from autoballoon.core.decide import Action
from autoballoon.core.state import STEP_GROWTH_MAX
from contrib.lab import GuestSpec, Lab, preset_policies
from tests.lab.conftest import LabUp
from tests.lab.daemon_helpers import Run

pytestmark = pytest.mark.lab

NAME = "ab-lab-r-idle"
PIDFILE = Path("/run/libvirtd.pid")
SOCKET = Path("/run/libvirt/libvirt-sock")


def libvirtd_pid() -> int:
    return int(PIDFILE.read_text().strip())


def restart_libvirtd(down_s: float) -> None:
    pid = libvirtd_pid()
    os.kill(pid, signal.SIGKILL)  # the harshest case: no goodbye to clients
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(down_s)
    SOCKET.unlink(missing_ok=True)
    subprocess.run(["libvirtd", "-d"], check=True, timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            libvirt.open("qemu:///system").close()
            return
        except libvirt.libvirtError:
            time.sleep(0.5)
    pytest.fail("libvirtd did not come back within 60 s")


def test_controller_survives_libvirtd_restart(
    lab: Lab, lab_up: LabUp, record_property: Callable[[str, object], None]
) -> None:
    (guest,) = lab_up([GuestSpec(NAME, 512, "idle")])
    with Run([NAME], preset_policies(stable_s=4.0)) as run:
        time.sleep(16)
        before = len(run.reports)
        up_before = guest.latest_report()["up"]  # type: ignore[index]
        kill_t = time.time()
        try:
            restart_libvirtd(down_s=6.0)
        finally:
            lab.conn = libvirt.open(lab.uri)  # the lab's own connection died with libvirtd
            lab.guests.clear()
        back_t = time.time()
        time.sleep(24)
    assert not run.errors, run.errors
    during = [r for r in run.reports if kill_t + 1 < r.t < back_t - 1]
    after = [r for r in run.reports if r.t > back_t + 2]
    assert before >= 4
    assert during, "ticks kept coming while libvirtd was down"
    # No decision on stale data: a tick that started during the outage either failed without
    # deciding, or kept retrying and read fresh data once libvirtd was back.
    for r in during:
        assert (r.error and not r.decisions) or r.t + r.duration_s >= back_t - 1.0, r
    assert any(r.error for r in during), "the outage was noticed"
    assert run.hv.reconnects >= 1
    assert after and all(r.error is None for r in after[1:]), "control resumed"
    assert any(d.guest == NAME for r in after for d in r.decisions)
    # no wild decisions: every change is an ordinary inflate step, never a jump (the n-th
    # calm take in a row may be n base steps, up to STEP_GROWTH_MAX)
    for n, d in enumerate(run.changes(NAME), 1):
        assert d.action is Action.INFLATE
        steps = min(n, STEP_GROWTH_MAX)
        assert d.current_kib - d.target_kib <= steps * int(0.10 * 512 * 1024) + 1024
    # the guest itself kept running through it: one boot (its uptime never went back) that
    # kept reporting during the outage and after it
    assert lab.guest(NAME).dom.isActive()
    ups = [r["up"] for r in guest.console_reports()]
    assert ups == sorted(ups), "the guest rebooted"
    record_property("guest_uptime_gained_s", round(ups[-1] - up_before, 1))
    record_property("outage_s", round(back_t - kill_t, 1))
    assert ups[-1] - up_before >= (back_t - kill_t) + 20, (up_before, ups[-1])
