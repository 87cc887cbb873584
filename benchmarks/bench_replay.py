"""Replay benchmark: one hour of 100 guests at 1 s ticks, through `autoballoon replay`.

    python -m benchmarks.bench_replay [--guests 100] [--seconds 3600] [--mode proactive]
                                      [--json] [--profile] [--keep FILE]

Generates a synthetic trace (realistic 6.12 guest statistics: idle guests, page-cache churn,
workloads that grow and shrink, occasional stalls and OOM kills, a few guests without the 6.12
counters) into a temporary file with ``TraceWriter``, then replays it in a child process, the
way an operator runs it, and prints wall time, CPU time and peak RSS of that child.
``--profile`` replays in this process under cProfile instead and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from autoballoon.core.samples import (
    EXTENDED_STATS,
    STAT_AVAILABLE_MEMORY,
    STAT_DISK_CACHES,
    STAT_FREE_MEMORY,
    STAT_TOTAL_MEMORY,
    GuestSample,
    HostSample,
)
from autoballoon.core.units import BYTES_PER_MIB
from autoballoon.trace import TraceWriter

START = 1764133200.0


@dataclass
class SimGuest:
    name: str
    kind: str
    max_mib: int
    used_mib: float
    cache_mib: float
    extended: bool = True
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counters = {
            "stat-swap-in": 0,
            "stat-swap-out": 0,
            "stat-major-faults": 400,
            "stat-minor-faults": 150_000,
            "stat-htlb-pgalloc": 0,
            "stat-htlb-pgfail": 0,
            "stat-oom-kills": 0,
            "stat-alloc-stalls": 0,
            "stat-async-scans": 3 * BYTES_PER_MIB,
            "stat-direct-scans": 0,
            "stat-async-reclaims": 2 * BYTES_PER_MIB,
            "stat-direct-reclaims": 0,
        }

    def advance(self, rng: random.Random, i: int) -> None:
        c = self.counters
        c["stat-minor-faults"] += rng.randrange(500, 5000)
        if self.kind == "churn":  # kswapd recycles page cache all the time
            c["stat-async-scans"] += rng.randrange(20, 60) * BYTES_PER_MIB
            c["stat-async-reclaims"] += rng.randrange(12, 40) * BYTES_PER_MIB
            c["stat-major-faults"] += rng.randrange(0, 5)
        elif self.kind == "wave":  # a workload that grows and shrinks over ~10 minutes
            phase = (i % 600) / 600
            self.used_mib = self.max_mib * (0.25 + 0.6 * (phase if phase < 0.5 else 1 - phase))
        if rng.random() < 0.002:  # a burst of pressure: stalls and direct reclaim
            c["stat-alloc-stalls"] += rng.randrange(1, 40)
            scanned = rng.randrange(1, 64) * BYTES_PER_MIB
            c["stat-direct-scans"] += scanned
            c["stat-direct-reclaims"] += scanned // rng.randrange(1, 4)
        if rng.random() < 0.0002:
            c["stat-oom-kills"] += 1

    def sample(self, t: float, actual_kib: int) -> GuestSample:
        total_mib = actual_kib / 1024 - 38
        free_mib = max(total_mib - self.used_mib - self.cache_mib, 4.0)
        stats = {
            STAT_TOTAL_MEMORY: int(total_mib * BYTES_PER_MIB),
            STAT_FREE_MEMORY: int(free_mib * BYTES_PER_MIB),
            STAT_AVAILABLE_MEMORY: int((free_mib + 0.8 * self.cache_mib) * BYTES_PER_MIB),
            STAT_DISK_CACHES: int(self.cache_mib * BYTES_PER_MIB),
        }
        for name, value in self.counters.items():
            if self.extended or name not in EXTENDED_STATS:
                stats[name] = value
        return GuestSample(
            name=self.name, uuid=f"00000000-0000-4000-8000-{int(self.name[3:]):012x}",
            t=t, actual_kib=actual_kib, max_kib=self.max_mib * 1024, last_update=int(t) - 1,
            stats=stats,
        )  # fmt: skip


def generate(path: Path, guests: int, seconds: int, seed: int = 5) -> None:
    rng = random.Random(seed)
    kinds = ["idle"] * 60 + ["churn"] * 25 + ["wave"] * 10 + ["legacy"] * 5
    sims = []
    for n in range(guests):
        kind = kinds[n % len(kinds)]
        max_mib = rng.choice((1024, 2048, 4096, 8192))
        sims.append(
            SimGuest(
                f"vm-{n:03d}",
                kind,
                max_mib,
                used_mib=max_mib * rng.uniform(0.1, 0.4),
                cache_mib=max_mib * rng.uniform(0.05, 0.3),
                extended=kind != "legacy",
            )  # fmt: skip
        )
    sizes = {g.name: g.max_mib * 1024 for g in sims}
    total_kib = 256 * 1024 * 1024
    with TraceWriter(path, 1.0, "bench-host", {"synthetic": True}) as w:
        for i in range(seconds):
            t = START + i + 0.011
            samples = {}
            for g in sims:
                g.advance(rng, i)
                if i % 300 == 150:  # the recording daemon resized some balloons
                    sizes[g.name] = max(sizes[g.name] - 64 * 1024, g.max_mib * 256)
                samples[g.name] = g.sample(t, sizes[g.name])
            available = int(total_kib * (0.15 + 0.1 * ((i // 600) % 2)))
            w.write_tick(t, HostSample(t, total_kib, available, 0.0, 0.0), samples)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_replay", description=__doc__)
    ap.add_argument("--guests", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=3600, help="trace length at 1 s ticks")
    ap.add_argument("--mode", default="proactive", choices=("observe", "on-demand", "proactive"))
    ap.add_argument("--json", action="store_true", help="replay with --json (output discarded)")
    ap.add_argument("--profile", action="store_true", help="cProfile the replay in-process")
    ap.add_argument("--keep", type=Path, help="write the trace here and keep it")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        trace = args.keep or Path(tmp) / "trace.jsonl"
        if trace.exists():
            trace.unlink()
        policies = Path(tmp) / "policies"
        policies.mkdir()
        (policies / "default.toml").write_text(f'[policy]\nmode = "{args.mode}"\n')

        t0 = time.perf_counter()
        generate(trace, args.guests, args.seconds)
        size_mib = trace.stat().st_size / BYTES_PER_MIB
        print(
            f"trace: {args.guests} guests x {args.seconds} ticks, {size_mib:.0f} MiB, "
            f"generated in {time.perf_counter() - t0:.1f} s"
        )
        cmd = ["replay", str(trace), "--policies", str(policies), "--no-strict-modes"]
        if args.json:
            cmd.append("--json")

        if args.profile:
            from autoballoon.cli import main as cli_main

            prof = cProfile.Profile()
            real_stdout = sys.stdout
            sys.stdout = io.StringIO() if not args.json else open(os.devnull, "w")  # noqa: SIM115
            try:
                prof.runcall(cli_main, cmd)
            finally:
                sys.stdout.close()
                sys.stdout = real_stdout
            stats = pstats.Stats(prof).sort_stats("cumulative")
            stats.print_stats(25)
            stats.sort_stats("tottime").print_stats(20)
            return 0

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        with open(os.devnull, "w") as devnull:
            proc = subprocess.run(
                [sys.executable, "-m", "autoballoon", *cmd], stdout=devnull, check=False
            )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        ticks = args.guests * args.seconds
        print(
            f"replay ({args.mode}{', --json' if args.json else ''}): exit {proc.returncode}, "
            f"wall {wall:.1f} s, CPU {cpu:.1f} s, peak RSS {after.ru_maxrss / 1024:.0f} MiB, "
            f"{ticks / wall:,.0f} guest-ticks/s"
        )
        return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
