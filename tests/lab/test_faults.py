"""Faults on real guests: each test asserts outcomes (sizes, decisions, the guests' own reports).

- a guest paused, resumed, destroyed or rebooted mid-run: handled, the others still controlled;
- a guest whose balloon driver never loads: never resized, the others still controlled;
- a guest without the 6.12 counters (QMP reads off): controlled from standard stats, marked so;
- the daemon SIGKILLed and restarted: it adopts the current sizes, and a guest whose pressure
  rose while it was down is given memory promptly;
- a clean stop with on_stop = "deflate" gives every guest its maximum back; "leave" does not.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from autoballoon.act import APPLIED
from autoballoon.core.classify import Basis, PressureClass
from autoballoon.core.decide import Action
from contrib.lab import (
    Guest,
    GuestSpec,
    Lab,
    daemon_command,
    preset_policies,
    preset_policy_dir,
    start_daemon,
)
from tests.lab.conftest import LabUp, wait_until
from tests.lab.daemon_helpers import INTERVAL_S, Run

pytestmark = pytest.mark.lab

A, B, C = "ab-lab-f-a", "ab-lab-f-b", "ab-lab-f-c"


@pytest.fixture(scope="module")
def guests(lab_up: LabUp, lab: Lab) -> Iterator[dict[str, Guest]]:
    booted = lab_up(
        [GuestSpec(A, 384, "idle"), GuestSpec(B, 384, "steady:96"), GuestSpec(C, 256, "idle")]
    )
    yield {g.name: g for g in booted}
    lab.down([A, B, C])


def decided(run: Run, name: str, since: float) -> list[object]:
    return [d for r in run.reports if r.t > since for d in r.decisions if d.guest == name]


def test_paused_resumed_destroyed_and_rebooted_guests(guests: dict[str, Guest]) -> None:
    a, b, c = guests[A], guests[B], guests[C]
    with Run([A, B, C], preset_policies()) as run:
        time.sleep(3 * INTERVAL_S)
        a.dom.suspend()
        paused_t = time.time()
        time.sleep(3 * INTERVAL_S)
        a.dom.resume()
        resumed_t = time.time()
        time.sleep(3 * INTERVAL_S)
        c.dom.destroy()
        destroyed_t = time.time()
        time.sleep(3 * INTERVAL_S)
        b.dom.reset()  # a hard reboot: every counter starts again from zero
        reset_t = time.time()
        wait_until(lambda: (b.latest_report() or {}).get("up", 99) < 30, 60, "B rebooted")
        time.sleep(6 * INTERVAL_S)
    assert not run.errors, run.errors
    paused = [r for r in run.reports if paused_t + 1 < r.t < resumed_t - 1]
    assert paused and all(r.skipped.get(A) == "paused" for r in paused)
    assert all(any(d.guest == B for d in r.decisions) for r in paused), "B still controlled"
    assert decided(run, A, resumed_t + INTERVAL_S), "A controlled again after resume"
    after_destroy = [r for r in run.reports if destroyed_t + 1 < r.t < reset_t]
    assert after_destroy and all(r.error is None for r in after_destroy)
    assert all(
        all(g.name != C for g in r.guests) and any(g.name == B for g in r.guests)
        for r in after_destroy
    )
    after_reset = [d for d in decided(run, B, reset_t + 2 * INTERVAL_S)]
    assert after_reset, "B is controlled after its reboot"
    assert all(d.klass is not PressureClass.OOM for d in after_reset)  # type: ignore[attr-defined]


def test_guest_without_balloon_driver_is_left_alone(lab_up: LabUp, lab: Lab) -> None:
    (g,) = lab_up([GuestSpec("ab-lab-f-nodrv", 256, "idle+noballoon")])
    try:
        with Run([g.name, A], preset_policies()) as run:
            time.sleep(30)
        assert not run.errors
        mine = [d for r in run.reports for d in r.decisions if d.guest == g.name]
        assert mine and all(d.action is Action.HOLD for d in mine)
        assert all(d.klass is PressureClass.UNKNOWN for d in mine)
        assert g.balloon_actual_mib() == 256
        assert any(d.guest == A for r in run.reports[-3:] for d in r.decisions)
    finally:
        lab.down([g.name])


def test_standard_stats_only_is_controlled_and_marked(guests: dict[str, Guest]) -> None:
    a = guests[A]
    a.set_balloon_mib(384)
    wait_until(lambda: a.balloon_actual_mib() == 384, 30, "the guest back at its maximum")
    run = Run([A], preset_policies(stable_s=4.0))
    run.hv.extended_stats = "off"  # what a guest with a pre-6.12 kernel looks like
    with run:
        time.sleep(30)
    assert not run.errors
    ds = run.decisions(A)
    assert all(g.source == "libvirt" for r in run.reports for g in r.guests if g.name == A)
    assert any(d.basis is Basis.STANDARD for d in ds)
    assert any(d.action is Action.INFLATE for d in ds), "still reclaimed from standard stats"
    # controlled, not only decided: every change was applied, and the guest's balloon, read
    # back through libvirt, went to the last target
    changed = [g.decision for r in run.reports for g in r.guests
               if g.name == A and g.decision.action is not Action.HOLD]
    assert all(d.result == APPLIED for d in changed), [d.result for d in changed]
    target_mib = changed[-1].target_kib / 1024
    wait_until(
        lambda: abs(a.balloon_actual_mib() - target_mib) <= 1, 30,
        f"the balloon at the last target, {target_mib:.0f} MiB",
        diag=lambda: f"balloon at {a.balloon_actual_mib():.0f} MiB",
    )
    assert target_mib < 384


def start_lab_daemon(tmp: Path, names: str, *extra: str) -> subprocess.Popen[str]:
    cmd = daemon_command(
        names,
        preset_policy_dir(tmp),
        interval_s=INTERVAL_S,
        status_file=tmp / "status.json",
        log_format="json",
        extra=extra,
    )
    return start_daemon(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "daemon.log", "a"),  # noqa: SIM115
    )


def test_sigkill_restart_adopts_sizes_and_rescues_pressure_that_rose_meanwhile(
    lab_up: LabUp, lab: Lab, tmp_path: Path
) -> None:
    # 40 MiB at first, 150 MiB from 70 s after boot: the jump comes while the daemon is dead.
    (g,) = lab_up([GuestSpec("ab-lab-f-spike", 384, "spike:40:150:70")])
    try:
        daemon = start_lab_daemon(tmp_path, g.name)
        wait_until(lambda: g.balloon_actual_mib() < 320, 60, "the daemon inflates the guest")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
        left_mib = 235
        g.set_balloon_mib(left_mib)  # where a longer-lived daemon would have left it
        ooms_before = int((g.latest_report() or {})["oom_kill"])
        wait_until(
            lambda: (g.latest_report() or {}).get("ws_mib", 0) >= 150,
            90,
            "the spike, nobody watching",
        )
        time.sleep(3)
        assert g.balloon_actual_mib() == left_mib, "nothing moves while the daemon is down"
        daemon = start_lab_daemon(tmp_path, g.name)
        sizes: list[float] = []

        def grown() -> bool:
            sizes.append(g.balloon_actual_mib())
            return sizes[-1] > left_mib + 8

        took = wait_until(grown, 40, "the restarted daemon gives the guest memory")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
        assert min(sizes) >= left_mib, "adopted the size it found: no jump down first"
        assert took < 5 * INTERVAL_S + 5, took
        assert "Traceback" not in (tmp_path / "daemon.log").read_text()
        ooms = int((g.latest_report() or {})["oom_kill"]) - ooms_before
        assert ooms == 0, "no OOM kill in the guest"
    finally:
        lab.down([g.name])


@pytest.mark.parametrize("on_stop", ["deflate", "leave"])
def test_clean_stop_leaves_or_deflates(
    guests: dict[str, Guest], tmp_path: Path, on_stop: str
) -> None:
    a = guests[A]
    a.set_balloon_mib(384)
    wait_until(lambda: a.balloon_actual_mib() == 384, 30, "the guest back at its maximum")
    daemon = start_lab_daemon(tmp_path, A, "--on-stop", on_stop)
    wait_until(lambda: a.balloon_actual_mib() < 330, 60, "the daemon inflates the guest")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
    time.sleep(1.5)
    size = a.balloon_actual_mib()
    if on_stop == "deflate":
        assert size == 384
    else:
        assert size < 330
    assert a.dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
