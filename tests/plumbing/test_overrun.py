"""A tick that takes longer than the interval: no overlap, no backlog (the real scheduler)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from autoballoon.config import DaemonConfig
from autoballoon.daemon import run_daemon
from autoballoon.hypervisor import Reading
from autoballoon.libvirt_adapter import LibvirtHypervisor


class SlowHypervisor(LibvirtHypervisor):
    """The test driver, but every read takes 2.5 s; records how many reads ever overlap."""

    def __init__(self) -> None:
        super().__init__("test:///default")
        self.active = 0
        self.max_active = 0
        self.reads: list[float] = []
        self._mutex = threading.Lock()

    def read(self, wanted: Callable[[str], bool]) -> Reading:
        with self._mutex:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.reads.append(time.monotonic())
            time.sleep(2.5)
            return super().read(wanted)
        finally:
            with self._mutex:
                self.active -= 1


def fast_config(tmp_path: Path) -> DaemonConfig:
    """Ticks due every 0.5 s on the test driver, policies and status file in tmp_path."""
    return DaemonConfig(
        uri="test:///default",
        interval_s=0.5,
        policy_dir=tmp_path,
        strict_modes=False,
        status_file=tmp_path / "status.json",
    )


def test_slow_ticks_neither_overlap_nor_pile_up(tmp_path: Path) -> None:
    hv = SlowHypervisor()
    config = fast_config(tmp_path)
    started = time.monotonic()
    code = run_daemon(config, hv, duration_s=9.0)
    elapsed = time.monotonic() - started
    assert code == 0
    assert hv.max_active == 1, "ticks never overlap"
    # 9 s of 2.5 s ticks: at most 4 started; a backlog would replay the 18 missed ones.
    assert 3 <= len(hv.reads) <= 5, hv.reads
    assert elapsed < 9.0 + 2.5 + 2.0, "the stop waited for one running tick, not a queue"


def test_sigterm_stops_after_the_current_tick(tmp_path: Path) -> None:
    hv = SlowHypervisor()
    config = fast_config(tmp_path)
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        started = time.monotonic()
        assert run_daemon(config, hv, duration_s=60.0) == 0
        assert time.monotonic() - started < 6.0
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert hv.active == 0, "the running tick finished before the daemon returned"
