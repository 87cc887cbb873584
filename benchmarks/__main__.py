"""Run every benchmark and write benchmarks/results/*.md (+ lab.png).

    python -m benchmarks [--quick] [--only core,tick,replay,adapter,footprint,lab,pg,burst,density]
                         [--out DIR]
    make bench

In order: core (CPU of classify + decide by guest count), tick (a whole tick at 1,000 guests of
libvirt's test driver against libvirt's own bulk read, and the daemon's RSS), replay (one hour of
100 synthetic guests through `autoballoon replay`), adapter (libvirt / QMP / setter cost per guest
on the lab), footprint (the daemon's RSS and CPU while it manages lab guests, 5 minutes), lab
(reclaimed memory versus harm, three scenarios x three modes on small guests, about 23 minutes), pg
(warm PostgreSQL twins, one under an arm and one untouched over the same seconds: the A/A noise
floor, the fixed-size frontier and six modes, 3 pairs each; host memory won versus pgbench's TPS,
p99 and disk reads; about 4 minutes a pair), burst (the spike scenario with and without
deflate-on-OOM, the counters and the headroom, about 16 minutes), density (two warm PostgreSQL
guests under one memory cgroup limit at an overcommit ratio, per mode, 3 runs each, about 6 minutes
a run). Several hours in all; the real-guest part alone is ``--only pg,burst,density``, and each
part runs in pieces on its own (see its --help). ``--quick`` is a smoke run (about 10 minutes;
burst and density have none and are skipped) whose numbers mean little.

Each benchmark runs as its own process. Every one of them holds the shared lab lock
(``contrib.lab.lab_lock``: /tmp/ab-lab.lock, or AB_LAB_LOCK) while it runs: those with lab guests
take it themselves, core, tick and replay (CPU heavy, and measured) are wrapped here. Do not
wrap this command in `flock` yourself: it would wait for itself (or set AB_LAB_LOCK_HELD=1 if
you must).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, RESULTS, header, say
from contrib.lab import lab_lock

ORDER = ("core", "tick", "replay", "adapter", "footprint", "lab", "pg", "burst", "density")


def _run_table(module: str, args: list[str], title: str, intro: str) -> tuple[str, int]:
    """Run a benchmark that writes a Markdown table (``--out FILE``) under the lab lock; the
    result file's text (machine header, ``intro``, the table) and the exit code."""
    with tempfile.TemporaryDirectory() as tmp, lab_lock(module.rsplit(".", 1)[-1]):
        table = Path(tmp) / "table.md"
        cmd = [sys.executable, "-m", module, "--out", str(table), *args]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        body = table.read_text() if table.exists() else proc.stdout
    text = header(title) + f"\n`python -m {module}`: {intro}\n\n" + body
    if proc.returncode:
        text += f"\nexit code {proc.returncode}:\n```\n{proc.stderr[-2000:]}\n```\n"
    return text, proc.returncode


def run_core(out: Path, quick: bool) -> int:
    text, code = _run_table(
        "benchmarks.bench_core",
        ["--ticks", "5"] if quick else [],
        "Core cost: classify + decide per tick",
        "synthetic guests (10 % of them under pressure, every guest's counters moving every "
        "tick) through `autoballoon.core.decide.step`, proactive mode, CPU time per tick "
        "(median after two warm-up ticks).",
    )
    (out / "core.md").write_text(text)
    print(text)
    return code


def run_tick(out: Path, quick: bool) -> int:
    text, code = _run_table(
        "benchmarks.bench_tick",
        ["--quick"] if quick else [],
        "Cost of a whole tick at 1,000 guests, against libvirt's bulk read",
        "libvirt's test driver in the benchmark's process with 1,000 running domains; per "
        "round, libvirt's bulk read, the core alone on realistic samples (counters moving every "
        "tick) and the daemon's whole `Controller.tick` (real adapter, live actuator, log, "
        "status file and metrics sinks), timed in turn; medians, and ratios taken in the same "
        "process.",
    )
    before = out / "tick-before.md"
    if before.exists():
        text += "\n## Before the cheaper tick (`tick-before.md`)\n\n" + before.read_text()
    (out / "tick.md").write_text(text)
    print(text)
    return code


def run_replay(out: Path, quick: bool) -> int:
    args = ["--guests", "20", "--seconds", "600"] if quick else []
    with lab_lock("bench_replay"):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_replay", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    m = re.search(
        r"exit (\d+), wall ([\d.]+) s, CPU ([\d.]+) s, peak RSS (\d+) MiB, ([\d,]+) guest-ticks/s",
        proc.stdout,
    )
    t = re.search(r"trace: (\d+) guests x (\d+) ticks, (\d+) MiB", proc.stdout)
    text = header("Replay: a synthetic trace through `autoballoon replay`") + (
        "\n`python -m benchmarks.bench_replay "
        + " ".join(args)
        + "`: a generated trace (idle guests, page-cache churn, workloads that grow and shrink, "
        "occasional stalls and OOM kills, a few guests without the 6.12 counters) replayed by "
        "`autoballoon replay` in a child process (proactive policy).\n\n"
    )
    if m and t:
        guests, ticks, size = t.groups()
        text += (
            "| guests | ticks (1 s) | trace MiB | wall s | CPU s | peak RSS MiB | guest-ticks/s |\n"
            "|---:|---:|---:|---:|---:|---:|---:|\n"
            f"| {guests} | {ticks} | {size} | {m[2]} | {m[3]} | {m[4]} | {m[5]} |\n\n"
            f"{int(ticks) / 60:.0f} minutes of a {guests}-guest host replay in "
            f"{float(m[2]):.1f} s, {int(ticks) / max(float(m[2]), 1e-9):.0f} times faster than "
            "real time.\n\n"
        )
    text += "```\n" + "\n".join(lines) + "\n```\n"
    if proc.returncode:
        text += f"\nexit code {proc.returncode}:\n```\n{proc.stderr[-2000:]}\n```\n"
    (out / "replay.md").write_text(text)
    print(text)
    return proc.returncode


MODULES = {"adapter": "benchmarks.bench_adapter", "footprint": "benchmarks.bench_footprint",
           "lab": "benchmarks.lab", "pg": "benchmarks.lab.pg", "burst": "benchmarks.lab.burst",
           "density": "benchmarks.lab.density"}
NO_QUICK = {"burst", "density"}
"""Benchmarks with no smoke run: ``--quick`` skips them."""
OUT_FILE = {"density": "density.md"}
"""Benchmarks whose --out is a file, not the results directory."""


def run_module(name: str, out: Path, quick: bool) -> int:
    if quick and name in NO_QUICK:
        say(f"{name}: no quick variant, skipped")
        return 0
    target = out / OUT_FILE[name] if name in OUT_FILE else out
    cmd = [sys.executable, "-m", MODULES[name], "--out", str(target)]
    if quick:
        cmd.append("--quick")
    return subprocess.run(cmd, cwd=REPO, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run of every benchmark")
    ap.add_argument("--only", default=",".join(ORDER), help="comma-separated subset")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    wanted = [b for b in args.only.split(",") if b]
    unknown = set(wanted) - set(ORDER)
    if unknown:
        ap.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(ORDER)}")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows = []
    wait_log = Path(tempfile.mkstemp(prefix="bench-lock-wait-")[1])
    os.environ["AB_BENCH_WAIT_LOG"] = str(wait_log)
    for name in ORDER:
        if name not in wanted:
            continue
        say(f"=== {name}")
        t0 = time.monotonic()
        try:
            if name == "core":
                code = run_core(args.out, args.quick)
            elif name == "tick":
                code = run_tick(args.out, args.quick)
            elif name == "replay":
                code = run_replay(args.out, args.quick)
            else:
                code = run_module(name, args.out, args.quick)
        except Exception as err:  # one broken benchmark must not stop the others
            say(f"{name} failed: {err!r}")
            code = -1
        waits = [float(x) for x in wait_log.read_text().split()]
        wait_log.write_text("")
        rows.append((name, code, time.monotonic() - t0, sum(waits)))
        say(f"=== {name}: exit {code} after {(time.monotonic() - t0) / 60:.1f} min")
    total = time.monotonic() - started
    wait_log.unlink(missing_ok=True)
    waited = sum(r[3] for r in rows)
    files = {"core": "core.md", "tick": "tick.md", "replay": "replay.md", "adapter": "adapter.md",
             "footprint": "footprint.md", "lab": "lab.md", "pg": "pg.md", "burst": "burst.md",
             "density": "density.md"}
    text = header("Benchmark runs") + (
        f"\n`python -m benchmarks{' --quick' if args.quick else ''}`: total wall time "
        f"{total / 60:.1f} min, of which {waited / 60:.1f} min waiting for the shared lab lock "
        f"(other people's lab runs), so {(total - waited) / 60:.1f} min of benchmarking.\n\n"
        "| benchmark | result | exit code | wall time | of which waiting for the lock |\n"
        "|---|---|---:|---:|---:|\n"
        + "".join(f"| {n} | [{files[n]}]({files[n]}) | {c} | {w / 60:.1f} min | "
                  f"{lw / 60:.1f} min |\n" for n, c, w, lw in rows)
    )
    (args.out / "index.md").write_text(text)
    print(text)
    return 0 if all(r[1] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
