"""pg.md and pg.png from the PostgreSQL benchmark's raw runs (``benchmarks.lab.pg``).

Pure functions of the raw data: nothing here touches libvirt, so a report can be rebuilt (and
tested) without the lab.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import header

STEADY_FRACTION = 0.5
"""The steady phase: the last half of the measured phase (the controller has had its first
minutes to take what it takes); the harm targets are judged there."""
TPS_TARGET = 0.05
P99_TARGET = 0.20
OPENING_S = 30.0
"""The measured phase's opening, before the controller's first balloon change in most runs (the
table shows when it came): each run's own throughput, to set its steady phase against."""


def _in(rows: Sequence[Mapping[str, Any]], a: float, b: float) -> list[Mapping[str, Any]]:
    return [x for x in rows if a <= x["t"] <= b]


def _pg_stats(pg: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    tx = sum(p["tx"] for p in pg)
    secs = sum(p["interval"] for p in pg)
    return {
        "tps": tx / secs if secs else 0.0,
        "p50_ms": statistics.median(p["p50_ms"] for p in pg) if pg else 0.0,
        "p99_ms": statistics.fmean(p["p99_ms"] for p in pg) if pg else 0.0,
        "p99_max_ms": max((p["p99_ms"] for p in pg), default=0.0),
        "intervals": len(pg),
        "failed": sum(p["failed"] for p in pg),
    }


def summarize(r: Mapping[str, Any]) -> dict[str, Any]:
    t0, t1 = r["t0"], r["t1"]
    ts = t1 - (t1 - t0) * STEADY_FRACTION
    measured = _in(r["samples"], t0, t1)
    first, last = measured[0], measured[-1]
    pg_all = [p for p in r["pg"] if t0 <= p["t"] and p["t"] + p["interval"] <= t1]
    pg_steady = [p for p in pg_all if p["t"] >= ts]
    in_run = _in(r["reports"], t0, t1)
    g0 = in_run[0] if in_run else {"Buffers": 0, "Cached": 0, "MemFree": 0}
    cache_free = (g0["Buffers"] + g0["Cached"] + g0["MemFree"]) / 1024
    returned = (first["ram_rss"] - last["ram_rss"]) / 1024
    actions = [e for e in r["events"] if e.get("action") in ("inflate", "deflate")]
    rules: dict[str, int] = {}
    for e in actions:
        rules[str(e.get("rule"))] = rules.get(str(e.get("rule")), 0) + 1
    oom = [x["oom_kill"] for x in in_run]
    return {
        "mode": r["mode"],
        "cache_free_mib": cache_free,
        "returned_mib": returned,
        "returned_pct": 100 * returned / cache_free if cache_free else 0.0,
        "ram_rss_start_mib": first["ram_rss"] / 1024,
        "ram_rss_end_mib": last["ram_rss"] / 1024,
        "qemu_rss_start_mib": first["qemu_rss"] / 1024,
        "qemu_rss_end_mib": last["qemu_rss"] / 1024,
        "held_back_mib": r["mem_mib"] - last["balloon"] / 1024,
        "host_avail_delta_mib": (last["host_avail"] - first["host_avail"]) / 1024,
        "all": _pg_stats(pg_all),
        "steady": _pg_stats(pg_steady),
        "opening": _pg_stats([p for p in pg_all if p["t"] + p["interval"] <= t0 + OPENING_S]),
        "first_change_s": min((float(e["ts"]) - t0 for e in actions if "ts" in e), default=None),
        "oom_kills": (max(oom) - min(oom)) if oom else 0,
        "alive": bool(r["alive_at_end"]),
        "inflations": sum(1 for e in actions if e["action"] == "inflate"),
        "deflations": sum(1 for e in actions if e["action"] == "deflate"),
        "rules": rules,
        "classes": sorted({str(e["class"]) for e in r["events"] if "class" in e}),
    }


def _pct(x: float, base: float) -> str:
    return f"{100 * (x - base) / base:+.0f} %" if base else "n/a"


def verdicts(s: Mapping[str, Any], base: Mapping[str, Any] | None) -> list[str]:
    """The issue's targets for one mode, against the ``none`` baseline (steady phase)."""
    out = []
    if base is not None and s["mode"] != "none":
        tps_ok = s["steady"]["tps"] >= (1 - TPS_TARGET) * base["steady"]["tps"]
        p99_ok = s["steady"]["p99_ms"] <= (1 + P99_TARGET) * base["steady"]["p99_ms"]
        out.append(f"TPS {'held' if tps_ok else 'MISSED'}")
        out.append(f"p99 {'held' if p99_ok else 'MISSED'}")
    out.append("0 OOM" if s["oom_kills"] == 0 else f"{s['oom_kills']} OOM kills")
    return out


def render(runs: Sequence[Mapping[str, Any]]) -> str:
    sums = [summarize(r) for r in runs]
    base = next((s for s in sums if s["mode"] == "none"), None)
    newest = max(runs, key=lambda r: r["t1"])
    r0 = runs[0]
    lines = [
        header("Warm PostgreSQL guest: host memory won versus harm, mode by mode",
               newest["machine"]),
        "",
        f"`python -m benchmarks.lab.pg` (part of `make bench`). One Debian 12 + PostgreSQL 15 "
        f"lab guest, {r0['mem_mib']} MiB, 1 vCPU under TCG, `pgbench -c 4 -j 1` over its Unix "
        "socket on a scale-20 database (321 MB; shared_buffers 128 MB), a fresh guest per mode "
        "from the same warm state: its page cache filled (database files, then its disk) until "
        f"the guest-RAM part of QEMU's RSS reached 85 % of its size. Measured phase "
        f"{r0['measure_s']:.0f} s per mode; the steady phase is its last "
        f"{STEADY_FRACTION:.0%}, where the harm targets (TPS within {TPS_TARGET:.0%}, p99 within "
        f"{P99_TARGET:.0%} of `none`) are judged. The daemon runs with its default 5 s tick. "
        "One run per mode on a 2-core host shared with other work: pgbench's TPS under TCG "
        "moves by up to about 25 % between runs of the same mode (`pg-repeat/` repeats two "
        "modes), so a single run's difference from `none` below that is noise; the second "
        "table compares each run with its own opening instead.",
        "",
        "Per mode (each run's date and commit in the last column):",
        "",
        "| mode | host got back: guest-RAM RSS start -> end (MiB) | of cache + free at start "
        "| held back (balloon) MiB | QEMU RSS start -> end MiB | TPS steady (all) "
        "| p50 / p99 ms steady | vs none: TPS, p99 | OOM kills | targets | run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r, s in zip(runs, sums, strict=True):
        st, al = s["steady"], s["all"]
        vs = (f"{_pct(st['tps'], base['steady']['tps'])}, "
              f"{_pct(st['p99_ms'], base['steady']['p99_ms'])}"
              if base is not None and s["mode"] != "none" else "baseline")
        lines.append(
            f"| `{s['mode']}` | {s['returned_mib']:.0f}: {s['ram_rss_start_mib']:.0f} -> "
            f"{s['ram_rss_end_mib']:.0f} | {s['returned_pct']:.0f} % of "
            f"{s['cache_free_mib']:.0f} | {s['held_back_mib']:.0f} | "
            f"{s['qemu_rss_start_mib']:.0f} -> {s['qemu_rss_end_mib']:.0f} | "
            f"{st['tps']:.1f} ({al['tps']:.1f}) | {st['p50_ms']:.0f} / {st['p99_ms']:.0f} | "
            f"{vs} | {s['oom_kills']} | {', '.join(verdicts(s, base))} | "
            f"{r['machine']['date']}, {r['machine']['commit']} |"
        )
    lines += [
        "",
        "Columns: *host got back* is the fall of the RSS of QEMU's guest-RAM mapping over the "
        "measured phase (memory the host has now); *of cache + free* compares it with the "
        "guest's Buffers + Cached + MemFree at the start (Cached includes PostgreSQL's 128 MB "
        "of shared memory, which cannot be given back); *held back* is the balloon (memory the "
        "guest can no longer take). p50 is the median of pgbench's 5 s intervals' p50, p99 "
        "the mean of their p99.",
        "",
        f"Within each run (the same guest before and after the controller acted): TPS in the "
        f"first {OPENING_S:.0f} s of the measured phase against the steady phase. Run-to-run "
        "differences in a guest's throughput cancel out here; `none` shows how much a guest's "
        "TPS moves on its own over the run.",
        "",
        f"| mode | first balloon change (s into the run) | TPS first {OPENING_S:.0f} s "
        "| TPS steady | steady vs first |",
        "|---|---:|---:|---:|---:|",
        *[f"| `{s['mode']}` | "
          + ("-" if s["first_change_s"] is None else f"{s['first_change_s']:.0f}")
          + f" | {s['opening']['tps']:.1f} | {s['steady']['tps']:.1f} | "
          + _pct(s["steady"]["tps"], s["opening"]["tps"]) + " |"
          for s in sums],
        "",
        "What each mode is:",
        "",
        *[f"- `{s['mode']}`: {r.get('what', s['mode'])}"
          + (f"; host short by {r['short_mib']} MiB at the start (reserve "
             f"{r['reserve_mib']} MiB)"
             + (f", a process holding up to {r['steady_peak_mib']} MiB kept MemAvailable "
                "steady" if r.get("steady_peak_mib") else "")
             if r["short_mib"] else "")
          + (f"; {s['inflations']} inflations, {s['deflations']} deflations "
             f"(rules: {', '.join(f'{k} {v}' for k, v in sorted(s['rules'].items())) or '-'}), "
             f"classes seen: {', '.join(s['classes']) or '-'}" if r["events"] else "")
          + ("" if s["alive"] else "; THE GUEST DID NOT SURVIVE")
          for r, s in zip(runs, sums, strict=True)],
        "",
        "![host RSS, balloon, TPS and class over time per mode](pg.png)",
        "",
    ]
    return "\n".join(lines)


CLASS_COLORS = {"none": "#d9f0d3", "unknown": "#dddddd", "light-pressure": "#e6f5b0",
                "kswapd-reclaim": "#ffffbf", "reclaim-struggling": "#fee08b",
                "global-reclaim": "#fdae61", "running-out": "#f46d43", "thrashing": "#d73027",
                "oom": "#a50026", "cgroup-stall": "#c2a5cf", "cgroup-oom": "#9970ab"}


def class_spans(r: Mapping[str, Any]) -> list[tuple[float, float, str]]:
    """(start s, end s, class) over the measured phase, from the daemon's log."""
    t0, t1 = r["t0"], r["t1"]
    marks = [(e["ts"] - t0, str(e["class"])) for e in r["events"] if "class" in e and "ts" in e]
    spans = []
    for i, (t, k) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else t1 - t0
        spans.append((max(0.0, t), end, k))
    return spans


def plot(runs: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(runs)
    fig, axes = plt.subplots(3, n, figsize=(3.3 * n, 7.0), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [3, 2, 0.5]})
    for j, r in enumerate(runs):
        t0, t1 = r["t0"], r["t1"]
        smp = _in(r["samples"], t0, t1)
        xs = [x["t"] - t0 for x in smp]
        ax = axes[0][j]
        ax.plot(xs, [x["ram_rss"] / 1024 for x in smp], label="guest-RAM RSS")
        ax.plot(xs, [x["qemu_rss"] / 1024 for x in smp], label="QEMU RSS", lw=0.9)
        ax.step(xs, [x["balloon"] / 1024 for x in smp], where="post", label="balloon size",
                ls="--")
        ax.set_title(r["mode"], fontsize=9)
        ax.set_ylim(0, r["mem_mib"] * 1.25)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        pg = [p for p in r["pg"] if t0 <= p["t"] and p["t"] + p["interval"] <= t1]
        ax2 = axes[1][j]
        ax2.step([p["t"] - t0 for p in pg], [p["tps"] for p in pg], where="post", color="C2",
                 label="TPS")
        ax2.set_ylim(0, max((p["tps"] for r2 in runs for p in r2["pg"]), default=1) * 1.1)
        ax2.grid(alpha=0.3)
        ax2.tick_params(labelsize=7)
        ax3 = ax2.twinx()
        ax3.plot([p["t"] - t0 for p in pg], [p["p99_ms"] for p in pg], color="C3", lw=0.8,
                 label="p99 ms")
        ax3.tick_params(labelsize=7)
        axc = axes[2][j]
        for a, b, k in class_spans(r):
            axc.axvspan(a, b, color=CLASS_COLORS.get(k, "#999999"))
            if b - a > 15:
                axc.text((a + b) / 2, 0.5, k, ha="center", va="center", fontsize=6)
        if not r["events"]:
            axc.text(0.5, 0.5, "no controller", ha="center", va="center", fontsize=7,
                     transform=axc.transAxes)
        axc.set_yticks([])
        axc.set_xlim(0, t1 - t0)
        axc.tick_params(labelsize=7)
        axc.set_xlabel("seconds into the measured phase", fontsize=7)
        if j == 0:
            ax.set_ylabel("MiB", fontsize=8)
            ax.legend(fontsize=6, loc="lower left")
            ax2.set_ylabel("pgbench TPS (5 s)", fontsize=8)
            axc.set_ylabel("class", fontsize=8)
        if j == n - 1:
            ax3.set_ylabel("p99 latency ms", fontsize=8, color="C3")
    fig.suptitle("Warm PostgreSQL guest per mode: host memory (QEMU RSS, guest-RAM RSS), "
                 "balloon size, pgbench TPS and p99, and the daemon's class for the guest",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
