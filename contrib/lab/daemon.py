"""Running the daemon against lab guests as a real process: `autoballoon run ...`.

One command-line builder and one process runner for the demo, the soak, the benchmarks, the
trace recorder and the lab tests, so they all start the daemon the same way: from the
repository's own package (cwd and PYTHONPATH at the repository), through its public CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def autoballoon_command(*args: str) -> list[str]:
    """``python -m autoballoon ARGS...`` with this interpreter (the repository's package)."""
    return [sys.executable, "-m", "autoballoon", *args]


def daemon_command(
    include: str | Sequence[str],
    policies: Path,
    *,
    interval_s: float | None = None,
    duration_s: float | None = None,
    status_file: Path | None = None,
    record: Path | None = None,
    log_format: str | None = None,
    log_level: str | None = None,
    dry_run: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """``python -m autoballoon run`` for the domains matching ``include`` (globs), with
    ``policies`` as its policy directory; None leaves the daemon's own default."""
    cmd = autoballoon_command("run")
    if dry_run:
        cmd.append("--dry-run")
    for pattern in [include] if isinstance(include, str) else include:
        cmd += ["--include", pattern]
    cmd += ["--policies", str(policies)]
    options: list[tuple[str, object]] = [
        ("--interval", interval_s),
        ("--duration", duration_s),
        ("--status-file", status_file),
        ("--record", record),
        ("--log-format", log_format),
        ("--log-level", log_level),
    ]
    for flag, value in options:
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + list(extra)


def daemon_env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(REPO)}


def start_daemon(cmd: Sequence[str], **popen: Any) -> subprocess.Popen[str]:
    """Start the daemon in the background (Popen keyword arguments pass through)."""
    return subprocess.Popen(list(cmd), cwd=REPO, env=daemon_env(), text=True, **popen)


def run_daemon(cmd: Sequence[str], **run: Any) -> subprocess.CompletedProcess[str]:
    """Run an autoballoon command line to its end (the daemon with ``--duration`` or
    ``--once``, or `status`...); subprocess.run's keywords (timeout, check, capture_output)
    pass through."""
    return subprocess.run(list(cmd), cwd=REPO, env=daemon_env(), text=True, **run)
