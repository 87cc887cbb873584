"""Shared set-up for the operator tests: a daemon process or a Controller on libvirt's test driver.

``test:///default`` needs no libvirtd; its one domain, "test", starts at 2 GiB of 8 GiB, and its
statistics are decades old (so its class is always ``unknown``). Each connection gets its own
pristine copy, so a daemon process and the test never see each other's changes.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import generate_latest

from autoballoon.config import DaemonConfig
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.units import BYTES_PER_MIB
from autoballoon.daemon import Controller
from autoballoon.hypervisor import RawGuest, Reading
from autoballoon.metrics import MetricsSink

URI = "test:///default"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def autoballoon(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoballoon", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_daemon(tmp: Path, status_file: Path, extra: Sequence[str] = ()) -> subprocess.Popen[str]:
    policies = tmp / "policies"
    policies.mkdir(exist_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autoballoon",
            "run",
            "--uri",
            URI,
            "--interval",
            "1",
            "--status-file",
            str(status_file),
            "--lock-file",
            str(tmp / "autoballoon.lock"),
            "--policies",
            str(policies),
            "--no-strict-modes",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_daemon(daemon: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """SIGTERM, then the daemon's (stdout, stderr) once it has exited.

    A daemon still running after ``timeout`` is a failure that shows where each of its threads
    was: `autoballoon run` prints their stacks on SIGUSR1.
    """
    daemon.send_signal(signal.SIGTERM)
    try:
        return daemon.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        daemon.send_signal(signal.SIGUSR1)
        time.sleep(2)
        daemon.kill()
        _, err = daemon.communicate()
        raise AssertionError(
            f"still running {timeout} s after SIGTERM; its stderr:\n{err}"
        ) from None


def wait_for(what: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


class ExtendedGuestHypervisor:
    """One guest that sends the Linux 6.12 counters (what QEMU's guest-stats gives the adapter)."""

    def __init__(self) -> None:
        self.errors = 0  # what LibvirtHypervisor counts, exposed when the hypervisor has them
        self.reconnects = 0
        self.error: str | None = None
        """Set: the guest's reading fails (the backend lists it as not controlled, and why)."""
        self.stats_age_s = 0
        """How old the guest's statistics are when read (QEMU's last_update)."""
        self.stats: dict[str, object] = {
            "stat-available-memory": 600 * BYTES_PER_MIB,
            "stat-free-memory": 300 * BYTES_PER_MIB,
            "stat-total-memory": 1024 * BYTES_PER_MIB,
            "stat-swap-in": 0,
            "stat-swap-out": 0,
            "stat-major-faults": 10,
            "stat-oom-kills": 1,
            "stat-alloc-stalls": 20,
            "stat-async-scans": 300 * BYTES_PER_MIB,
            "stat-direct-scans": 40 * BYTES_PER_MIB,
            "stat-async-reclaims": 200 * BYTES_PER_MIB,
            "stat-direct-reclaims": 30 * BYTES_PER_MIB,
        }

    def read(self, wanted: Callable[[str], bool]) -> Reading:
        if self.error is not None:  # this guest's monitor failed: seen, not controlled
            return Reading([], {"vm-612": self.error})
        last_update = int(time.time()) - self.stats_age_s
        g = RawGuest("vm-612", "uuid-612", 1024 * 1024, 2048 * 1024, last_update, self.stats, "qmp")
        return Reading([g])

    def set_balloon_kib(self, name: str, kib: int) -> None:
        pass

    def close(self) -> None:
        pass


def extended_controller(tmp_path: Path) -> tuple[ExtendedGuestHypervisor, Controller, MetricsSink]:
    """A dry-run controller on ``ExtendedGuestHypervisor`` with a metrics sink, after two ticks
    (the first gives the classifier no rates yet): the guest is classified ``none``."""
    sink = MetricsSink()
    config = DaemonConfig(policy_dir=tmp_path, status_file=tmp_path / "s.json")
    hv = ExtendedGuestHypervisor()
    ctl = Controller(config, hv, PolicySet(GuestPolicy()), dry_run=True, sinks=[sink])
    ctl.tick()
    hv.stats["stat-major-faults"] = 11
    ctl.tick()
    return hv, ctl, sink


def scrape_extended(tmp_path: Path) -> str:
    _hv, _ctl, sink = extended_controller(tmp_path)
    return generate_latest(sink.registry).decode()
