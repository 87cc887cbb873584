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
