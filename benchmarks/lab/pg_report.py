"""pg.md, frontier.md and frontier.png from the twins benchmark's raw pairs
(``benchmarks.lab.pg``).

Pure functions of the raw data: nothing here touches libvirt, so the results can be rebuilt
(and tested) without the lab. Every harm figure is a ratio of the treated guest to its twin over
the same seconds; every verdict is read against the A/A pairs' spread (the noise floor).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import back_to_back, header

SETTLE_S = 60.0
"""Harm is judged from this many seconds into the measured phase to its end: the fixed sizes
have been reached and a controller has taken its first steps (it keeps acting in the window)."""
TPS_TARGET = 0.95
"""The knee and the harm target: TPS at least this share of the twin's..."""
P99_TARGET = 1.20
"""...and p99 latency at most this multiple of the twin's."""
STILL_TAKING_S = 30.0
"""A controller that inflated within this many seconds of the end was still taking memory: what
it got back is where the phase stopped it, not where it would have settled."""


def settle_s(measure_s: float) -> float:
    """Where the harm window starts: SETTLE_S in, or a third of a short (smoke) run."""
    return min(SETTLE_S, measure_s / 3)


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _pg_in(pg: Sequence[Mapping[str, Any]], a: float, b: float) -> list[Mapping[str, Any]]:
    """pgbench's intervals that lie wholly inside [a, b] (host epoch seconds)."""
    return [p for p in pg if a <= p["t"] and p["t"] + p["interval"] <= b]


def _at(rows: Sequence[Mapping[str, Any]], t: float) -> Mapping[str, Any]:
    """The first row at or after ``t`` (the last row if none is)."""
    return next((x for x in rows if x["t"] >= t), rows[-1])


def psi_pct(reports: Sequence[Mapping[str, Any]], a: float, b: float, key: str
            ) -> float | None:
    """% of [a, b] a task in the guest was stalled on memory, from the guest's own PSI total
    (microseconds) in its reports; None without two reports carrying it."""
    win = [x for x in reports if a <= x["t"] <= b + 1 and key in x]
    if len(win) < 2:
        return None
    span_us = (win[-1]["t"] - win[0]["t"]) * 1e6
    return 100 * (win[-1][key] - win[0][key]) / span_us if span_us > 0 else None


def guest_summary(g: Mapping[str, Any], t0: float, t1: float, ts: float) -> dict[str, Any]:
    """One twin over a pair's measured phase [t0, t1], harm over its window [ts, t1]."""
    smp = [x for x in g["samples"] if t0 <= x["t"] <= t1 + 1]
    first, last = smp[0], smp[-1]
    pg = _pg_in(g["pg"], ts, t1)
    tx = sum(p["tx"] for p in pg)
    secs = sum(p["interval"] for p in pg)
    s_ts = _at(smp, ts)
    reads = last["rd_req"] - s_ts["rd_req"]
    read_kib = (last["rd_bytes"] - s_ts["rd_bytes"]) / 1024
    reps = [x for x in g["reports"] if t0 <= x["t"] <= t1 + 1]
    win = [x for x in reps if x["t"] >= ts]
    g0 = reps[0] if reps else {"Buffers": 0, "Cached": 0, "MemFree": 0}

    oom = [x["oom_kill"] for x in reps]
    return {
        "tx": tx,
        "tps": tx / secs if secs else 0.0,
        "p99_ms": statistics.fmean(p["p99_ms"] for p in pg) if pg else 0.0,
        "p50_ms": _median([p["p50_ms"] for p in pg]),
        "intervals": len(pg),
        "reads_per_tx": reads / tx if tx else 0.0,
        "read_kib_per_tx": read_kib / tx if tx else 0.0,
        "psi_some_pct": psi_pct(win, ts, t1, "psi_some_total"),
        "psi_full_pct": psi_pct(win, ts, t1, "psi_full_total"),
        "oom_kills": (max(oom) - min(oom)) if oom else 0,
        "alive": bool(g["alive_at_end"]),
        "cache_free_mib": (g0["Buffers"] + g0["Cached"] + g0["MemFree"]) / 1024,
        "ram_rss_start_mib": first["ram_rss"] / 1024,
        "ram_rss_end_mib": last["ram_rss"] / 1024,
        "returned_mib": (first["ram_rss"] - last["ram_rss"]) / 1024,
        "balloon_end_mib": last["balloon"] / 1024,
    }


def summarize(r: Mapping[str, Any]) -> dict[str, Any]:
    """One pair: both twins, and the treated guest's ratios to its twin."""
    t0, t1 = r["t0"], r["t1"]
    ts = t0 + settle_s(t1 - t0)
    tr = guest_summary(r["guests"][r["treated"]], t0, t1, ts)
    tw = guest_summary(r["guests"][r["twin"]], t0, t1, ts)
    actions = [e for e in r["events"] if e.get("action") in ("inflate", "deflate")]
    takes = [e for e in actions if e["action"] == "inflate" and e.get("result") == "applied"]
    return {
        "arm": r["arm"], "pair": r["pair"], "treated_name": r["treated"], "t0": r["t0"],
        "size_mib": r.get("size_mib"), "mem_mib": r["mem_mib"],
        "date": r["machine"]["date"], "commit": r["machine"]["commit"],
        "treated": tr, "twin": tw,
        "tps_ratio": tr["tps"] / tw["tps"] if tw["tps"] else float("nan"),
        "p99_ratio": tr["p99_ms"] / tw["p99_ms"] if tw["p99_ms"] else float("nan"),
        "returned_mib": tr["returned_mib"],
        "returned_pct": 100 * tr["returned_mib"] / tr["cache_free_mib"]
        if tr["cache_free_mib"] else 0.0,
        "held_back_mib": r["mem_mib"] - tr["balloon_end_mib"],
        "inflations": sum(1 for e in actions if e["action"] == "inflate"),
        "deflations": sum(1 for e in actions if e["action"] == "deflate"),
        "still_taking": bool(takes) and t1 - takes[-1]["ts"] <= STILL_TAKING_S,
        "take_steps_mib": [(e["from_kib"] - e["to_kib"]) / 1024 for e in takes],
        "take_gaps_s": [b["ts"] - a["ts"] for a, b in itertools.pairwise(takes)],
        "classes": sorted({str(e["class"]) for e in r["events"] if "class" in e}),
        "oom_kills": tr["oom_kills"] + tw["oom_kills"],
        "lost": int(not tr["alive"]) + int(not tw["alive"]),
    }


def pair_line(s: Mapping[str, Any]) -> str:
    """One pair in a line, for progress output."""
    return (f"host got back {s['returned_mib']:.0f} MiB ({s['returned_pct']:.0f} % of cache + "
            f"free), TPS x{s['tps_ratio']:.2f}, p99 x{s['p99_ratio']:.2f} of the twin, reads/tx "
            f"{s['treated']['reads_per_tx']:.2f} vs {s['twin']['reads_per_tx']:.2f}, "
            f"OOM kills {s['oom_kills']}, lost {s['lost']}")


# ----------------------------------------------------------------------------- aggregation

Getter = Callable[[Mapping[str, Any]], float | None]


def spread(sums: Sequence[Mapping[str, Any]], get: Getter) -> tuple[float, float, float] | None:
    """(median, min, max) of one figure over pairs; None where no pair has it."""
    xs = [x for x in (get(s) for s in sums) if x is not None]
    return (statistics.median(xs), min(xs), max(xs)) if xs else None


def fmt(sp: tuple[float, float, float] | None, f: str = ".2f", unit: str = "") -> str:
    if sp is None:
        return "-"
    m, lo, hi = sp
    return f"{m:{f}}{unit} [{lo:{f}}, {hi:{f}}]"


def by_arm(sums: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for s in sorted(sums, key=lambda s: (s["arm"], s["pair"])):
        out.setdefault(s["arm"], []).append(s)
    return out


def noise_floor(arms: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, float] | None:
    """The A/A pairs' largest departure from 1, for TPS and p99: the smallest effect the
    instrument can tell from noise."""
    aa = arms.get("none")
    if not aa:
        return None
    return {"tps": max(abs(1 - s["tps_ratio"]) for s in aa),
            "p99": max(abs(1 - s["p99_ratio"]) for s in aa), "pairs": len(aa)}


def harm_verdict(pairs: Sequence[Mapping[str, Any]], floor: Mapping[str, float] | None) -> str:
    """TPS and p99 against the targets, claimed only as far as the noise floor allows."""
    out = []
    for key, target, better in (("tps", TPS_TARGET, "ge"), ("p99", P99_TARGET, "le")):
        xs = [s[f"{key}_ratio"] for s in pairs]
        med = statistics.median(xs)
        fl = floor[key] if floor else float("nan")
        name = "TPS" if key == "tps" else "p99"
        meets_all = all(x >= target for x in xs) if better == "ge" else all(
            x <= target for x in xs)
        meets_med = med >= target if better == "ge" else med <= target
        beyond_noise = (med < 1 - fl) if better == "ge" else (med > 1 + fl)
        tol = abs(1 - target)
        if floor is None:
            out.append(f"{name}: no A/A floor")
        elif meets_all and fl <= tol:
            out.append(f"{name} within {tol:.0%} in every pair")
        elif not beyond_noise:
            worse = [x for x in xs if (x < 1 - fl if better == "ge" else x > 1 + fl)]
            out.append(f"{name} harm not detectable (median inside the ±{fl:.0%} floor)" + (
                f", but {len(worse)} of {len(xs)} pairs beyond it (worst "
                f"{min(worse) if better == 'ge' else max(worse):.2f})" if worse else ""))
        elif meets_med:
            out.append(f"{name} {med - 1:+.0%}: beyond the floor, within target")
        else:
            out.append(f"{name} {med - 1:+.0%}: HARM beyond the ±{fl:.0%} floor")
    return "; ".join(out)


def frontier_points(arms: Mapping[str, Sequence[Mapping[str, Any]]]
                    ) -> list[tuple[int, list[Mapping[str, Any]]]]:
    """(size MiB, pairs) for each fixed size, largest first; the A/A pairs as the guest's full
    size (nothing taken)."""
    pts = [(int(p[0]["size_mib"]), list(p)) for a, p in arms.items() if a.startswith("size-")]
    if arms.get("none"):
        pts.append((int(arms["none"][0]["mem_mib"]), list(arms["none"])))
    return sorted(pts, key=lambda x: -x[0])


def knee(points: Sequence[tuple[int, Sequence[Mapping[str, Any]]]]
         ) -> tuple[int, Sequence[Mapping[str, Any]]] | None:
    """The smallest fixed size whose median TPS ratio >= 0.95 and median p99 ratio <= 1.2."""
    meeting = [(size, pairs) for size, pairs in points
               if statistics.median(s["tps_ratio"] for s in pairs) >= TPS_TARGET
               and statistics.median(s["p99_ratio"] for s in pairs) <= P99_TARGET]
    return min(meeting, key=lambda x: x[0]) if meeting else None


def misses_above(points: Sequence[tuple[int, Sequence[Mapping[str, Any]]]],
                 k: tuple[int, Sequence[Mapping[str, Any]]] | None) -> list[int]:
    """Sizes larger than the knee that missed a target (by their medians): a frontier that is
    not monotonic, which the noise floor may explain."""
    if k is None:
        return []
    return [size for size, pairs in points if size > k[0] and (
        statistics.median(s["tps_ratio"] for s in pairs) < TPS_TARGET
        or statistics.median(s["p99_ratio"] for s in pairs) > P99_TARGET)]


# ----------------------------------------------------------------------------- rendering

def _returned(s: Mapping[str, Any]) -> float:
    return float(s["returned_mib"])


@dataclass(frozen=True)
class Analysis:
    """What every output reads: the pairs summarised, by arm, the A/A floor, the frontier and
    its knee."""

    sums: list[dict[str, Any]]
    arms: dict[str, list[Mapping[str, Any]]]
    floor: dict[str, float] | None
    pts: list[tuple[int, list[Mapping[str, Any]]]]
    knee: tuple[int, Sequence[Mapping[str, Any]]] | None

    @property
    def knee_mib(self) -> float | None:
        return statistics.median(_returned(s) for s in self.knee[1]) if self.knee else None


def analyse(runs: Sequence[Mapping[str, Any]]) -> Analysis:
    sums = [summarize(r) for r in runs]
    arms = by_arm(sums)
    pts = frontier_points(arms)
    return Analysis(sums, arms, noise_floor(arms), pts, knee(pts))


def pace(pairs: Sequence[Mapping[str, Any]]) -> str:
    """How a controller arm took memory: its step and the time between steps, and in how many
    pairs it was still taking at the end (then the phase, not the law, set what it got back)."""
    steps = [x for s in pairs for x in s.get("take_steps_mib", [])]
    gaps = [x for s in pairs for x in s.get("take_gaps_s", [])]
    if not steps:
        return ""
    still = sum(1 for s in pairs if s.get("still_taking"))
    return (f"; steps of {statistics.median(steps):.0f} MiB (median)"
            + (f" every {statistics.median(gaps):.0f} s" if gaps else "")
            + f"; still taking at the end (an inflation in its last {STILL_TAKING_S:.0f} s) in "
            f"{still} of {len(pairs)} pairs")


def _row(arm: str, pairs: Sequence[Mapping[str, Any]], floor: Mapping[str, float] | None,
         knee_mib: float | None) -> str:
    ret = spread(pairs, _returned)
    vs_knee = "-"
    if knee_mib and ret is not None:
        vs_knee = f"{100 * ret[0] / knee_mib:.0f} %"
    psi = spread(pairs, lambda s: s["treated"]["psi_some_pct"])
    psi_tw = spread(pairs, lambda s: s["twin"]["psi_some_pct"])
    return (
        f"| `{arm}` | {len(pairs)} | {fmt(ret, '.0f')} | "
        f"{fmt(spread(pairs, lambda s: s['returned_pct']), '.0f', ' %')} | "
        f"{fmt(spread(pairs, lambda s: s['held_back_mib']), '.0f')} | "
        f"{fmt(spread(pairs, lambda s: s['tps_ratio']))} | "
        f"{fmt(spread(pairs, lambda s: s['p99_ratio']))} | "
        f"{fmt(spread(pairs, lambda s: s['treated']['reads_per_tx']))} / "
        f"{fmt(spread(pairs, lambda s: s['twin']['reads_per_tx']))} | "
        f"{fmt(psi, '.1f')} / {fmt(psi_tw, '.1f')} | "
        f"{sum(s['oom_kills'] for s in pairs)} | {sum(s['lost'] for s in pairs)} | "
        f"{vs_knee} | "
        + (harm_verdict(pairs, floor) if arm != "none" else "the noise floor") + " |"
    )


TABLE_HEAD = (
    "| arm | pairs | host got back MiB | of cache + free | held back MiB | TPS ratio "
    "| p99 ratio | disk reads / tx: treated / twin | memory PSI some %: treated / twin "
    "| OOM kills | guests lost | of the knee's memory | verdict |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)

COLUMNS = (
    "Each cell is the median over pairs, with [min, max] after it. *Host got back*: the "
    "fall of the treated guest's guest-RAM RSS (QEMU's mapping of guest memory, from "
    "`/proc/PID/smaps`) from the start to the end of the measured phase: memory the host has "
    "now. *Of cache + free*: that, as a share of the guest's Buffers + Cached + MemFree at the "
    "start (Cached includes PostgreSQL's 128 MB of shared memory). *Held back*: the balloon at "
    "the end (memory the guest cannot use). *TPS ratio*, *p99 ratio*: the treated guest's "
    "pgbench TPS and mean 5-s p99 latency over the harm window, divided by its twin's over the "
    "same seconds. *Disk reads / tx*: virtio read requests per transaction in the window (a "
    "cache miss caused by ballooning shows here whatever the CPU noise). *Memory PSI some*: % "
    "of the window the guest had a task stalled on memory (`/proc/pressure/memory`). *OOM "
    "kills* and *guests lost* count both twins of every pair."
)


def floor_sentence(floor: Mapping[str, float] | None) -> str:
    if floor is None:
        return ("**Noise floor: not measured** (no A/A pair in the raw data): no harm verdict "
                "below the targets can be trusted.")
    return (f"**Noise floor (A/A, {floor['pairs']:.0f} pairs of two untouched twins): the TPS "
            f"ratio departs from 1 by up to {floor['tps']:.0%}, the p99 ratio by up to "
            f"{floor['p99']:.0%}.** A smaller effect cannot be told from noise with this "
            "instrument; a verdict of *within 5 %* is given only where the floor is below 5 % "
            "and every pair is within it.")


def method(r0: Mapping[str, Any]) -> str:
    return (
        f"`python -m benchmarks.lab.pg` (part of `make bench`). Two identical Debian 12 + "
        f"PostgreSQL 15 lab guests ({r0['mem_mib']} MiB, 1 vCPU each under TCG) boot together "
        "from the same image, fill their page cache the same way (database files, then their "
        "disk) until QEMU's guest-RAM RSS reaches 85 % of their size, and run the same "
        "`pgbench -c 4 -j 1` (scale 20, 321 MB; shared_buffers 128 MB) over the same seconds. "
        "Then one twin is put under the arm and the other gets nothing; pairs alternate which "
        f"twin is treated. Measured phase {r0['measure_s']:.0f} s; harm is judged from "
        f"{settle_s(r0['measure_s']):.0f} s into it to its end. Targets: TPS >= {TPS_TARGET} "
        f"and p99 <= {P99_TARGET} of the twin. The daemon runs with its default 5 s tick and "
        "manages the treated guest only. Raw data: `benchmarks/results/raw/pg/`; "
        "`python -m benchmarks.lab.pg --render-only` rebuilds this file from it."
    )


def newest(runs: Sequence[Mapping[str, Any]]) -> Mapping[str, str]:
    machine: Mapping[str, str] = max(runs, key=lambda r: r["t1"])["machine"]
    return machine


def provenance(sums: Sequence[Mapping[str, Any]]) -> str:
    dates = sorted({s["date"][:10] for s in sums})
    commits = sorted({s["commit"] for s in sums})
    return (f"Pairs measured on {', '.join(dates)} at commit(s) {', '.join(commits)} "
            f"(each pair's in the last table).{pair_time(sums)}")


BACK_TO_BACK_S = 600.0
"""Pairs whose measured phases started less than this apart ran one after the other."""


def pair_time(sums: Sequence[Mapping[str, Any]]) -> str:
    """How long a pair takes on this machine, from pairs run back to back: the time between
    the starts of their measured phases (boot, warm-up, the phase itself, teardown)."""
    took = back_to_back([s["t0"] for s in sums], BACK_TO_BACK_S)
    if took is None:
        return ""
    med, n, longest = took
    return (f" Run back to back, a pair took {med / 60:.1f} min (median of "
            f"{n} pairs that followed another; longest {longest / 60:.1f} min).")


def render_pg(runs: Sequence[Mapping[str, Any]]) -> str:
    a_ = analyse(runs)
    sums, arms, floor, k, knee_mib = a_.sums, a_.arms, a_.floor, a_.knee, a_.knee_mib
    mode_arms = [a for a in arms if not a.startswith("size-")]
    lines = [
        header("Warm PostgreSQL twins: host memory won versus harm, mode by mode",
               newest(runs)),
        "",
        floor_sentence(floor),
        "",
        method(runs[0]),
        provenance(sums),
        "",
        ("The yardstick is the fixed-size frontier's knee (`frontier.md`): "
         + (f"{k[0]} MiB, where the host got back {knee_mib:.0f} MiB (median)."
            if k else "not found in the data (no fixed size met both targets).")),
        "",
        TABLE_HEAD,
        *[_row(a, arms[a], floor, knee_mib) for a in mode_arms],
        "",
        COLUMNS,
        "",
        "What each arm is:",
        "",
        *[f"- `{a}`: {next(r['what'] for r in runs if r['arm'] == a)}"
          + "".join(sorted({f" (the host held {r['short_mib']} MiB short of its reserve)"
                            for r in runs if r["arm"] == a and r.get("short_mib")}))
          + (f"; classes seen: {', '.join(sorted({c for s in arms[a] for c in s['classes']}))}"
             f"; inflations {sum(s['inflations'] for s in arms[a])}, deflations "
             f"{sum(s['deflations'] for s in arms[a])} over all pairs{pace(arms[a])}"
             if any(s['classes'] for s in arms[a]) else "")
          for a in mode_arms],
        "",
        "![host memory back against harm: the frontier and every mode](frontier.png)",
        "",
        "Every pair:",
        "",
        pairs_table([s for s in sums if not s["arm"].startswith("size-")]),
        "",
    ]
    return "\n".join(lines)


def pairs_table(sums: Sequence[Mapping[str, Any]]) -> str:
    rows = ["| arm | pair | treated | host got back MiB | held back MiB | TPS treated / twin "
            "| p99 ms treated / twin | TPS ratio | p99 ratio | reads/tx treated / twin "
            "| OOM | lost | measured |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in sums:
        tr, tw = s["treated"], s["twin"]
        rows.append(
            f"| `{s['arm']}` | {s['pair']} | {s['treated_name'][-1]} | "
            f"{s['returned_mib']:.0f} | {s['held_back_mib']:.0f} | "
            f"{tr['tps']:.1f} / {tw['tps']:.1f} | {tr['p99_ms']:.0f} / {tw['p99_ms']:.0f} | "
            f"{s['tps_ratio']:.2f} | {s['p99_ratio']:.2f} | "
            f"{tr['reads_per_tx']:.2f} / {tw['reads_per_tx']:.2f} | {s['oom_kills']} | "
            f"{s['lost']} | {s['date']}, {s['commit']} |")
    return "\n".join(rows)


def render_frontier(runs: Sequence[Mapping[str, Any]]) -> str:
    a_ = analyse(runs)
    sums, floor, pts, k, knee_mib = a_.sums, a_.floor, a_.pts, a_.knee, a_.knee_mib
    misses = misses_above(pts, k)
    lines = [
        header("The fixed-size frontier: host memory back against harm, no controller",
               newest(runs)),
        "",
        floor_sentence(floor),
        "",
        method(runs[0]),
        provenance(sums),
        "",
        "Arms: the treated twin's balloon is set once, when the measured phase starts, to a "
        "fixed size and held there; no controller runs. The full size is the A/A pair (nothing "
        "taken). No controller can beat the best fixed size by much: it is the yardstick for "
        "every mode (`pg.md`).",
        "",
        ("**Knee: " + (f"{k[0]} MiB**, the smallest fixed size whose median TPS ratio is >= "
                       f"{TPS_TARGET} and median p99 ratio <= {P99_TARGET}: the host got back "
                       f"{knee_mib:.0f} MiB (median)."
                       + (" It is the smallest size measured: the knee may lie lower."
                          if k[0] == min(x for x, _ in pts) else "") if k else
                       "none**: no fixed size met both targets.")
         + (f" Larger sizes that missed a target by their median: "
            f"{', '.join(f'{x} MiB' for x in misses)}; their misses are within the A/A noise "
            "floor, so the frontier is read as flat down to the knee." if misses and floor
            and all(abs(1 - statistics.median(s['tps_ratio'] for s in dict(pts)[x]))
                    <= floor["tps"] for x in misses) else
            (f" Larger sizes that missed a target by their median: "
             f"{', '.join(f'{x} MiB' for x in misses)}." if misses else ""))),
        "",
        TABLE_HEAD.replace("| arm |", "| size MiB |"),
        *[_row(str(size), pairs, floor, knee_mib).replace(f"| `{size}` |", f"| {size} |")
          for size, pairs in pts],
        "",
        COLUMNS,
        "",
        "![host memory back against harm: the frontier and every mode](frontier.png)",
        "",
        "Every pair:",
        "",
        pairs_table([s for size, pairs in pts for s in pairs]),
        "",
    ]
    return "\n".join(lines)


def plot(runs: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a_ = analyse(runs)
    arms, floor, pts, k = a_.arms, a_.floor, a_.pts, a_.knee
    panels: list[tuple[str, Getter, float | None]] = [
        ("TPS ratio to the twin", lambda s: s["tps_ratio"], TPS_TARGET),
        ("p99 ratio to the twin", lambda s: s["p99_ratio"], P99_TARGET),
        ("disk reads per transaction (treated)", lambda s: s["treated"]["reads_per_tx"], None),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6))
    for ax, (title, get, target) in zip(axes, panels, strict=True):
        xs, ys, lo, hi = [], [], [], []
        for size, pairs in pts:
            x = spread(pairs, _returned)
            y = spread(pairs, get)
            if x is None or y is None:
                continue
            xs.append(x[0])
            ys.append(y[0])
            lo.append(y[0] - y[1])
            hi.append(y[2] - y[0])
            ax.annotate(f"{size}", (x[0], y[0]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color="C0")
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", color="C0", capsize=3,
                    label="fixed size (median, min-max)")
        for i, (arm, pairs) in enumerate((a, p) for a, p in arms.items()
                                         if not a.startswith("size-") and a != "none"):
            x = spread(pairs, _returned)
            y = spread(pairs, get)
            if x is None or y is None:
                continue
            ax.errorbar([x[0]], [y[0]], yerr=[[y[0] - y[1]], [y[2] - y[0]]],
                        xerr=[[x[0] - x[1]], [x[2] - x[0]]], fmt="s", color=f"C{i + 1}",
                        capsize=2, label=arm)
        if target is not None:
            ax.axhline(target, color="k", ls=":", lw=0.8, label="target")
            if floor is not None:
                f = floor["tps"] if target < 1 else floor["p99"]
                ax.axhspan(1 - f, 1 + f, color="grey", alpha=0.15, label="A/A noise floor")
        if k is not None:
            km = spread(k[1], _returned)
            if km is not None:
                ax.axvline(km[0], color="C3", ls="--", lw=0.8, label=f"knee ({k[0]} MiB)")
        ax.set_xlabel("host got back: guest-RAM RSS fall, MiB", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6, loc="lower left")
    fig.suptitle("Warm PostgreSQL twins: memory the host got back against harm to pgbench "
                 "(treated / twin over the same seconds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write(runs: Sequence[Mapping[str, Any]], out: Path) -> list[Path]:
    """pg.md, frontier.md and frontier.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("pg.md", render_pg(runs)), ("frontier.md", render_frontier(runs))):
        (out / name).write_text(text)
        written.append(out / name)
    plot(runs, out / "frontier.png")
    written.append(out / "frontier.png")
    return written
