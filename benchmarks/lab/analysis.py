"""From one run's raw data to per-guest numbers: reclaimed memory, the oracle, harm (the guests'
own counters, and the same counters run through the pure classifier), reaction, flips.

Pure: reads the raw data (``runner``'s output, or a saved lab-raw.json), never the lab. Each
tick keeps every guest's ``autoballoon.report.GuestRecord`` as JSON; it is read back as that
record, so the names here are the ones the status file and the trace use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from autoballoon.core.classify import PressureClass, classify
from autoballoon.core.decide import Action
from autoballoon.core.policy import GuestPolicy
from autoballoon.core.samples import GuestSample
from autoballoon.report import GuestRecord
from contrib.lab.policies import preset_policies

PAGE = 4096
HARM_CLASSES = {PressureClass.THRASHING, PressureClass.GLOBAL_RECLAIM, PressureClass.OOM}
RESCUE_TRIGGERS = {PressureClass.THRASHING, PressureClass.OOM}

RAW_FORMAT = 2
"""Version of the raw data: 2 keeps each guest's ``GuestRecord`` per tick (1 kept a dict of its
own with other names)."""


class RawDataError(ValueError):
    """Raw data this analysis cannot read; the message says why and what to do."""


def check_format(raw: Mapping[str, Any]) -> None:
    found = raw.get("format", 1)
    if found != RAW_FORMAT:
        raise RawDataError(
            f"raw data format {found}, this analysis reads format {RAW_FORMAT} (per-guest "
            "GuestRecord per tick): render it with the benchmarks.lab that recorded it"
        )


def guest_ticks(run: Mapping[str, Any], name: str) -> list[tuple[float, GuestRecord]]:
    """The guest's record at each tick that decided for it, with the tick's time."""
    return [
        (tk["t"], GuestRecord.model_validate(tk["guests"][name]))
        for tk in run["ticks"]
        if name in tk["guests"]
    ]


def _report_sample(name: str, t: float, rep: Mapping[str, float], max_kib: int) -> GuestSample:
    """An ABREPORT line as the controller would have seen it (vmstat pages -> bytes)."""
    stats = {
        "stat-oom-kills": int(rep["oom_kill"]),
        "stat-alloc-stalls": int(rep["allocstall"]),
        "stat-async-scans": int(rep["pgscan_kswapd"]) * PAGE,
        "stat-direct-scans": int(rep["pgscan_direct"]) * PAGE,
        "stat-async-reclaims": int(rep["pgsteal_kswapd"]) * PAGE,
        "stat-direct-reclaims": int(rep["pgsteal_direct"]) * PAGE,
        "stat-total-memory": int(rep["MemTotal"]) * 1024,
        "stat-free-memory": int(rep["MemFree"]) * 1024,
        "stat-available-memory": int(rep["MemAvailable"]) * 1024,
    }
    return GuestSample(name, name, t, max_kib, max_kib, int(t), stats)


def guest_side_classes(
    name: str, reports: Sequence[tuple[float, Mapping[str, float]]], max_kib: int,
    policy: GuestPolicy,
) -> list[tuple[float, PressureClass]]:
    """Each ABREPORT classified by autoballoon.core.classify from the guest's own counters."""
    samples = [_report_sample(name, t, r, max_kib) for t, r in reports]
    out = []
    keep = policy.rate_window_s + 2
    lo = 0
    for i, s in enumerate(samples):
        while samples[lo].t < s.t - keep:
            lo += 1
        c = classify(samples[max(lo - 1, 0) : i + 1], policy, s.t)
        out.append((s.t, c.klass))
    return out


def _time_in(series: Sequence[tuple[float, Any]], wanted: set[Any], t0: float, t1: float,
             cap_s: float) -> float:
    total = 0.0
    for (ta, ka), (tb, _) in zip(series, series[1:], strict=False):
        if ka in wanted and ta >= t0 and ta < t1:
            total += min(tb - ta, cap_s)
    return total


def _avg(series: Sequence[tuple[float, float]], t0: float, t1: float) -> float | None:
    """Time-weighted average of a step series over [t0, t1]."""
    pts = [(t, v) for t, v in series if t0 <= t <= t1]
    if not pts:
        return None
    if len(pts) == 1:
        return pts[0][1]
    total = sum((tb - ta) * va for (ta, va), (tb, _) in zip(pts, pts[1:], strict=False))
    span = pts[-1][0] - pts[0][0]
    return total / span if span > 0 else pts[0][1]


def _mib(kib: float | None) -> float | None:
    return None if kib is None else kib / 1024


def analyze_run(run: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per-guest numbers for one run (baseline: the `none` run of the same scenario)."""
    policy = preset_policies().default
    t0, t_end, interval = run["t0"], run["t_end"], run["interval_s"]
    half = t0 + (t_end - t0) / 2
    minutes = (t_end - t0) / 60
    out: dict[str, Any] = {}
    for name, meta in run["guests"].items():
        reports = [(t, r) for t, r in run["reports"].get(name, [])]
        max_kib = meta["mem_mib"] * 1024
        ticks = guest_ticks(run, name)
        actual = [(t, g.actual_kib / 1024) for t, g in ticks]
        reclaimed = [(t, (max_kib - g.actual_kib) / 1024) for t, g in ticks]

        def need_peak(rs: Sequence[tuple[float, Mapping[str, float]]], a: float, b: float
                      ) -> float | None:
            vals = [(r["MemTotal"] - r["MemAvailable"]) / 1024 for t, r in rs if a <= t <= b]
            return max(vals) if vals else None

        overhead = (max_kib - reports[0][1]["MemTotal"]) / 1024 if reports else None
        own_need = need_peak(reports, t0, t_end)
        base_need = None
        if baseline is not None and name in baseline["guests"]:
            brs = baseline["reports"].get(name, [])
            base_need = need_peak(brs, baseline["t0"], baseline["t_end"])
        need = base_need if base_need is not None else own_need
        oracle = None
        if need is not None and overhead is not None:
            oracle = meta["mem_mib"] - need - overhead

        pre = [r for t, r in reports if t <= t0]
        base_r = pre[-1] if pre else (reports[0][1] if reports else None)
        last_r = reports[-1][1] if reports else None

        deltas: dict[str, int | None] = {
            key: None if base_r is None or last_r is None else int(last_r[key] - base_r[key])
            for key in ("oom_kill", "allocstall", "memload_restarts")
        }

        in_run = [(t, r) for t, r in reports if t0 <= t <= t_end]
        # Guest-side OOM kill times (the ABREPORT where oom_kill went up).
        oom_times = []
        prev = base_r
        for t, r in in_run:
            if prev is not None and r["oom_kill"] > prev["oom_kill"]:
                oom_times.append(t)
            prev = r
        # Pressure onset: stalls or direct scanning rising, an OOM kill, or a rescue class.
        onset = None
        prev = base_r
        for t, r in in_run:
            if prev is not None and any(
                r[k] > prev[k] for k in ("allocstall", "pgscan_direct", "oom_kill")
            ):
                onset = t
                break
            prev = r
        ctl_rescue = [t for t, g in ticks if g.klass in HARM_CLASSES]
        if ctl_rescue and (onset is None or ctl_rescue[0] < onset):
            onset = ctl_rescue[0]
        deflates = [t for t, g in ticks if g.decision.action is Action.DEFLATE]
        reaction = None
        if onset is not None:
            after = [t for t in deflates if t >= onset - interval]
            if after:
                reaction = max(after[0] - onset, 0.0)
        # Deflate within two ticks of oom/thrashing (guest-side OOM kills, and controller
        # classes): ticks from the event to the first deflate; None when the guest was at max.
        rescue_events = oom_times + [
            t for t, g in ticks if g.klass in RESCUE_TRIGGERS
        ]
        worst_ticks = None
        missed = 0
        for te in sorted(set(rescue_events)):
            at_max = any(g.actual_kib >= g.max_kib for t, g in ticks if te - interval <= t <= te)
            nxt = [t for t in deflates if t >= te - 0.5]
            if at_max and not [t for t in nxt if t - te <= 2 * interval]:
                continue  # nothing to give back
            n = math.inf if not nxt else max(math.ceil((nxt[0] - te) / interval - 1e-6), 0)
            worst_ticks = n if worst_ticks is None else max(worst_ticks, n)
            missed += n > 2
        spike_window = None
        if meta["kind"] == "spike" and base_r is not None:
            high = [t - t0 for t, r in in_run if r["ws_mib"] > base_r["ws_mib"] + 16]
            if high:
                spike_window = (high[0], high[-1])
        acts = [g.decision.action for _, g in ticks if g.decision.action is not Action.HOLD]
        flips = sum(1 for a, b in zip(acts, acts[1:], strict=False) if a != b)
        gclasses = guest_side_classes(name, reports, max_kib, policy)
        cap = 3 * interval
        ctl_series = [(t, g.klass) for t, g in ticks]
        last_hold = next((g.decision.reason for _, g in reversed(ticks)), "")
        out[name] = {
            "role": meta["role"],
            "kind": meta["kind"],
            "max_mib": meta["mem_mib"],
            "workload": meta["workload"],
            "overhead_mib": overhead,
            "need_peak_mib": own_need,
            "need_peak_baseline_mib": base_need,
            "oracle_mib": oracle,
            "reclaimed_avg_mib": _avg(reclaimed, t0, t_end),
            "reclaimed_2nd_mib": _avg(reclaimed, half, t_end),
            "final_mib": actual[-1][1] if actual else None,
            "min_mib": min(v for _, v in actual) if actual else None,
            "oom_kills": deltas["oom_kill"],
            "stalls": deltas["allocstall"],
            "memload_restarts": deltas["memload_restarts"],
            "harm_s_guest": _time_in(gclasses, HARM_CLASSES, t0, t_end, 3.0),
            "harm_s_ctl": _time_in(ctl_series, HARM_CLASSES, t0, t_end, cap),
            "onset_s": None if onset is None else onset - t0,
            "reaction_s": reaction,
            "rescue_worst_ticks": worst_ticks,
            "rescue_missed": missed,
            "rescue_events": len(set(rescue_events)),
            "oom_times_s": [t - t0 for t in oom_times],
            "direction_changes": flips,
            "changes_per_min": flips / minutes if minutes > 0 else 0.0,
            "inflates": sum(1 for a in acts if a is Action.INFLATE),
            "deflates": sum(1 for a in acts if a is Action.DEFLATE),
            "rss_start_mib": _mib(run["start"].get(name, {}).get("rss")),
            "rss_end_mib": _mib(run["end"].get(name, {}).get("rss")),
            "spike_s": spike_window,
            "last_reason": last_hold,
            "series": [(t - t0, v) for t, v in actual],
            "source": ticks[-1][1].source if ticks else None,
        }
    return out


def analyze(raw: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    check_format(raw)
    runs = {(r["scenario"], r["mode"]): r for r in raw["runs"]}
    return {
        key: analyze_run(run, runs.get((key[0], "none")))
        for key, run in runs.items()
    }
