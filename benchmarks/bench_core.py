"""Benchmark: CPU cost of the pure core (classify + decide) per tick, by number of guests.

Synthetic guests with realistic 6.12 statistics (every guest's counters move every tick, as on a
host; ``--calm`` for the older input where calm guests' counters never move), 10 % pressured, run
through ``autoballoon.core.decide.step`` for a number of ticks. Prints a Markdown table of CPU
time per tick and per guest. Run: `python -m benchmarks.bench_core [--out FILE]`, or
`python -m benchmarks.bench_core --profile 1000 [--closed]` for where one size's ticks spend
their time (cProfile, the functions with the most time of their own). The first columns are the
open loop measured since the start (balloons never follow the targets); the last one closes the
loop (each tick's balloons are the previous tick's targets), as on a host.
"""

from __future__ import annotations

import argparse
import cProfile
import platform
import pstats
import random
import time
from pathlib import Path

from autoballoon.core.decide import EngineState, step
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.samples import EXTENDED_STATS, GuestSample, HostSample
from autoballoon.core.units import BYTES_PER_MIB
from benchmarks.common import emit

SIZES = (10, 100, 1000, 5000)


def make_guests(n: int, seed: int = 1) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [
        {
            "max_mib": rng.choice([512, 1024, 2048, 4096, 8192]),
            "used": rng.uniform(0.1, 0.95),
            "pressure": rng.random() < 0.1,
            "kswapd_mib": rng.uniform(0.5, 8.0),
            "faults": rng.randint(200, 5000),
        }
        for _ in range(n)
    ]


def tick_samples(
    guests: list[dict[str, float]],
    t: float,
    i: int,
    actual: dict[str, int] | None = None,
    calm: bool = False,
) -> dict[str, GuestSample]:
    """The guests' samples at tick ``i``: balloons at their maximum, or at ``actual`` (KiB, by
    name: the previous tick's targets), with the guest's available memory smaller by as much.

    Realistic by default: every guest's counters move every tick (kswapd scans and reclaims a
    little, faults and the occasional swap, as on a host's real guests), so the core computes
    rates for every guest at every tick. ``calm``: the input measured before 2026-12, where
    calm guests report identical counters every tick (rates for only the pressured 10 %)."""
    out = {}
    for k, g in enumerate(guests):
        max_kib = int(g["max_mib"] * 1024)
        name = f"vm-{k:05d}"
        size_kib = max_kib if actual is None else actual.get(name, max_kib)
        stats = dict.fromkeys(EXTENDED_STATS, 0)
        if not calm:
            scanned = int(g["kswapd_mib"] * BYTES_PER_MIB) * i
            stats |= {
                "stat-async-scans": scanned,
                "stat-async-reclaims": scanned * 3 // 4,
                "stat-major-faults": int(g["faults"]) // 50 * i,
                "stat-minor-faults": int(g["faults"]) * i,
                "stat-swap-in": 4096 * (i // 3),
                "stat-swap-out": 4096 * (i // 4),
            }
        if g["pressure"]:
            stats |= {
                "stat-alloc-stalls": 3 * i,
                "stat-direct-scans": 4 * BYTES_PER_MIB * i,
                "stat-direct-reclaims": BYTES_PER_MIB * i,
            }
        stats["stat-available-memory"] = max(
            int(max_kib * 1024 * (1 - g["used"])) - (max_kib - size_kib) * 1024, 0
        )
        out[name] = GuestSample(name, name, t, size_kib, max_kib, int(t), stats)
    return out


def bench(
    n: int,
    ticks: int,
    profile: cProfile.Profile | None = None,
    closed: bool = False,
    calm: bool = False,
) -> tuple[float, float]:
    """Median and worst CPU seconds per tick. Open loop (the default, the series measured since
    the start): the balloons never follow the targets, so every inflated guest is a stalled
    inflation every tick. ``closed``: each tick's balloons are the previous tick's targets, as
    on a host whose guests follow."""
    guests = make_guests(n)
    policies = PolicySet(GuestPolicy(mode="proactive"))
    host = HostSample(0, 256 << 20, 64 << 20)
    state = EngineState()
    inputs = (
        [] if closed else [tick_samples(guests, 1000.0 + 5 * i, i, calm=calm) for i in range(ticks)]
    )
    actual: dict[str, int] = {}
    cpu = []
    for i in range(ticks):
        samples = tick_samples(guests, 1000.0 + 5 * i, i, actual, calm) if closed else inputs[i]
        if profile is not None and i >= 2:
            profile.enable()
        t0 = time.process_time()
        decisions, state = step(1000.0 + 5 * i, host, samples, state, policies)
        cpu.append(time.process_time() - t0)
        if profile is not None:
            profile.disable()
        actual = {d.guest: d.target_kib for d in decisions}
    steady = sorted(cpu[2:])  # the first ticks build histories and policy caches
    median = steady[len(steady) // 2]
    return median, max(steady)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("--out", type=Path, help="also write the Markdown table here")
    ap.add_argument("--profile", type=int, metavar="GUESTS",
                    help="profile the ticks of this many guests instead (after the warm-up)")
    ap.add_argument("--closed", action="store_true", help="profile the closed loop")
    ap.add_argument("--calm", action="store_true",
                    help="the old input: calm guests' counters never move (rates for 10 %%)")
    args = ap.parse_args()
    if args.profile:
        prof = cProfile.Profile()
        bench(args.profile, args.ticks, prof, closed=args.closed, calm=args.calm)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    given = "calm guests' counters never move" if args.calm else "counters moving every tick"
    lines = [
        f"Core cost (classify + decide), {args.ticks} ticks, CPU time, median tick, {given}; "
        f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}",
        "",
        "| guests | per tick (ms) | worst tick (ms) | per guest (us) | closed loop per tick (ms) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in SIZES:
        median, worst = bench(n, args.ticks, calm=args.calm)
        closed, _ = bench(n, args.ticks, closed=True, calm=args.calm)
        lines.append(
            f"| {n} | {median * 1e3:.1f} | {worst * 1e3:.1f} | {median / n * 1e6:.1f} | "
            f"{closed * 1e3:.1f} |"
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    emit(text, args.out)


if __name__ == "__main__":
    main()
