"""A tick that takes longer than the interval: no overlap, no backlog (the real scheduler)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from autoballoon.backends.libvirt import LibvirtHypervisor
from autoballoon.config import DaemonConfig
from autoballoon.daemon import run_daemon
from autoballoon.hypervisor import Reading


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


def test_sigterm_handed_to_another_thread_still_stops_the_daemon(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A process's signal may land on any of its threads that does not block it; Python then
    runs the handler only when the main thread next runs Python code. A main thread that sleeps
    until the stop request would never see it: the daemon would run until SIGKILL."""
    hv = LibvirtHypervisor("test:///default")
    config = fast_config(tmp_path)
    # pthread_kill aims the signal at the timer's own thread, never the main one.
    threading.Timer(1.0, lambda: signal.pthread_kill(threading.get_ident(), signal.SIGTERM)).start()
    previous = signal.getsignal(signal.SIGTERM)
    caplog.set_level(logging.INFO, logger="autoballoon")
    try:
        assert run_daemon(config, hv, duration_s=30.0) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    said = [r.getMessage() for r in caplog.records]
    assert "SIGTERM: stopping after the current tick" in said, said
    (stopped,) = [m for m in said if m.startswith("stopped after")]
    # Ticks are due every 0.5 s and the signal comes after 1 s: a handful of ticks. Had the
    # request waited for the 30 s duration, there would be about 60.
    ticks = int(stopped.split()[2])
    assert 1 <= ticks <= 15, stopped
