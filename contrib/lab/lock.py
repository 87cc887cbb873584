"""The lab lock: one user of the lab's guests (and of the host's two cores) at a time.

Lab tests, benchmarks, the demo, the soak and the trace recorder all take this exclusive
``flock`` while they have guests up or burn CPU that is being measured: timing-sensitive checks
(deflate within two ticks) and timings would be noise otherwise.

Environment:
- ``AB_LAB_LOCK``: the lock file (default /tmp/ab-lab.lock), read at each call.
- ``AB_LAB_LOCK_HELD=1``: the caller already holds it (e.g. ``flock /tmp/ab-lab.lock ...``
  around this process); locking again from here would wait for ever.
- ``AB_BENCH_WAIT_LOG``: a file to which every wait (seconds) is appended; `python -m
  benchmarks` reports the time spent waiting apart from the time spent benchmarking.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

DEFAULT_LOCK = "/tmp/ab-lab.lock"

_depth = 0
waited_s = 0.0
"""Seconds this process has spent waiting for the lock so far."""


def lock_path() -> Path:
    return Path(os.environ.get("AB_LAB_LOCK", DEFAULT_LOCK))


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@contextlib.contextmanager
def lab_lock(what: str, path: Path | None = None, verbose: bool = True) -> Iterator[None]:
    """Hold the lab lock for the body; waits (and says so) while someone else holds it.

    Re-entrant within this process: a benchmark's stretch inside another stretch does not wait
    for itself.
    """
    global _depth, waited_s
    if _depth or os.environ.get("AB_LAB_LOCK_HELD") == "1":
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    path = path or lock_path()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for the lab lock {path} ({what}); someone else is using the lab")
            started = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited = time.monotonic() - started
            waited_s += waited
            _say(f"got the lab lock after {waited:.0f} s")
            wait_log = os.environ.get("AB_BENCH_WAIT_LOG")
            if wait_log:
                with open(wait_log, "a") as fh:
                    fh.write(f"{waited:.1f}\n")
        held = time.monotonic()
        _depth = 1
        try:
            yield
        finally:
            _depth = 0
            fcntl.flock(fd, fcntl.LOCK_UN)
            if verbose:
                _say(f"lab lock released ({what}, held {time.monotonic() - held:.0f} s)")
    finally:
        os.close(fd)
