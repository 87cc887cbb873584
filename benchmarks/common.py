"""What every benchmark shares: where results go, the machine header, log lines, the lab's
benchmark guests (named ``ab-lab-b-*``, the only domains a benchmark ever destroys).

The lab lock itself is ``contrib.lab.lab_lock``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from contrib.lab import Lab

REPO = Path(__file__).resolve().parents[1]

RESULTS = REPO / "benchmarks" / "results"
GUEST_PREFIX = "ab-lab-b-"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)



def emit(text: str, out: Path | None) -> None:
    """Print a benchmark's table, and write it to ``out`` when given."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def machine() -> dict[str, str]:
    """nproc, CPU model, RAM, kernel, date and commit: the header of every result file."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 1024 / 1024
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
        commit = out.stdout.strip() or commit
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{ram_gib:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
    }


def header(title: str, info: Mapping[str, str] | None = None) -> str:
    m = dict(info or machine())
    return (
        f"# {title}\n\n"
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram']} RAM, Linux {m['kernel']}, "
        f"Python {m['python']}. Date: {m['date']}. Commit: {m['commit']}.\n"
    )


def placeholder(arg: str, work: Path) -> str:
    """Temporary paths of this machine do not belong in a committed report."""
    return arg.replace(str(work / "policies"), "POLICY_DIR").replace(
        str(work / "status.json"), "STATUS_FILE"
    )


def other_domains(conn: Any, own_prefix: str = GUEST_PREFIX) -> list[str]:
    """Running domains that are not ours (they share the two cores with our guests)."""
    try:
        doms = conn.listAllDomains(1)  # VIR_CONNECT_LIST_DOMAINS_ACTIVE
    except Exception:  # a listing problem must not stop a benchmark
        return []
    return sorted(d.name() for d in doms if not d.name().startswith(own_prefix))


def down_fresh(names: Sequence[str]) -> None:
    """Destroy our guests over a new connection (the old one may have died with libvirtd)."""
    lab = Lab()
    try:
        lab.down(list(names))
    finally:
        lab.close()


def back_to_back(starts: Sequence[float], within_s: float) -> tuple[float, int, float] | None:
    """How long one run of a benchmark takes, from runs made one after the other: the median
    time between consecutive starts less than ``within_s`` apart, how many such gaps, and the
    longest; None when no run followed another."""
    ts = sorted(starts)
    gaps = [b - a for a, b in itertools.pairwise(ts) if b - a < within_s]
    return (statistics.median(gaps), len(gaps), max(gaps)) if gaps else None
