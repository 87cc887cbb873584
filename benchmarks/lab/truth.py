"""Agreement between each tick's class and what the guest really lives through.

    python -m benchmarks.lab.truth [--modes observe,live] [--duration 120] [--out DIR]
    python -m benchmarks.lab.truth --analyze-only RAW.json [--out DIR]

Four scenarios run side by side, one guest each (booted fresh, squeezed by hand to a size below
what its workload will want, then the real controller ticks every 2 s in this process, with the
aggressive preset; in ``observe`` mode it classifies and never acts):

- ``cgroup``: a 64 MiB memory cgroup OOM-killed about every 1.5 s in a 512 MiB guest;
- ``exhaust``: no swap, an anonymous working set growing 32 -> 400 MiB over 100 s, guest at 224 MiB;
- ``swap``: zram swap, a 64 MiB working set jumping to 260 MiB 60 s after boot, guest at 224 MiB;
- ``cache``: 200 MiB of page cache re-read every 5 s plus 32 MiB anonymous, guest at 160 MiB.

Both figures are given: over every tick, and without the ticks in the first rate window after
the truth changed. The table counts every tick.

The truth of a tick comes only from the guest's own ABREPORT lines (never from the counters the
balloon reports), over the same span the class is measured on: the rate window (10 s) that
ends at the tick, from the two reports that bracket it (see ``truth_of``; ``per_window=False``
takes the tick's own 2 s instead, which a 10 s class cannot follow: both are in the report):

- ``harm``: the guest's memory stalls, outside the cgroup's own, took at least ``PSI_HARM`` of
  the time (PSI ``some`` total of /proc/pressure/memory minus the cgroup's memory.pressure
  ``some`` total, over the elapsed uptime), or memload's last pass over its working set took at
  least ``PASS_HARM_MS``, or its slowest allocation of the last second at least
  ``ALLOC_HARM_US_PER_MIB``, or the guest's OOM killer ran outside the cgroup;
- ``cgroup``: not harm, but the cgroup's ``oom_kill`` rose or its own stalls took at least
  ``PSI_HARM`` of the time: the limit inside the guest bites, the guest as a whole is calm;
- ``calm``: neither.

A tick agrees when harm meets a pressure class (``PRESSURE_CLASSES``), and calm or cgroup meet a
calm class (``none``, ``cgroup-oom``). ``unknown`` never agrees. A tick within one rate window
(``rate_window_s`` of the preset) after the truth changed may be left out: the class is measured
over that window and lags any change by up to its length.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoballoon.backends.libvirt import LibvirtHypervisor
from autoballoon.config import DaemonConfig
from autoballoon.core.classify import CALM_CLASSES, PRESSURE_CLASSES
from autoballoon.daemon import Controller
from benchmarks.common import say
from benchmarks.lab.runner import ConsolePoller, compact_tick
from contrib.lab import GuestSpec, Lab, lab_lock, preset_policies
from contrib.lab.policies import preset_path

PSI_HARM = 0.10
PASS_HARM_MS = 100.0
ALLOC_HARM_US_PER_MIB = 20000.0
INTERVAL_S = 2.0
PREFIX = "ab-lab-tr-"


@dataclass(frozen=True)
class TruthGuest:
    scenario: str
    mem_mib: int
    squeeze_mib: int
    workload: str
    what: str

    @property
    def spec(self) -> GuestSpec:
        return GuestSpec(PREFIX + self.scenario, self.mem_mib, self.workload)


SCENARIOS = (
    TruthGuest("cgroup", 512, 512, "cache:16+cgroup:64:100", "cgroup at memory.max, guest calm"),
    TruthGuest("exhaust", 512, 224, "ramp:32:400:100", "swapless anon growth into the guest"),
    TruthGuest("swap", 512, 224, "zram:128+spike:64:260:60", "anon spike with zram swap"),
    TruthGuest("cache", 384, 160, "cache:200+steady:32", "page cache re-read, larger than RAM"),
)


def run(mode: str, duration_s: float) -> dict[str, Any]:
    lab = Lab()
    specs = [g.spec for g in SCENARIOS]
    names = [s.domain_name for s in specs]
    try:
        lab.down(names)
        guests = lab.up(specs)
        for g, sc in zip(guests, SCENARIOS, strict=True):
            if sc.squeeze_mib < sc.mem_mib:
                g.set_balloon_mib(sc.squeeze_mib)
        poller = ConsolePoller(guests)
        poller.start()
        policies = preset_policies(mode="observe") if mode == "observe" else preset_policies()
        hv = LibvirtHypervisor(include=names, retry_for_s=3.0)
        config = DaemonConfig(interval_s=INTERVAL_S, policy_dir=preset_path().parent)
        controller = Controller(config, hv, policies)
        ticks: list[dict[str, Any]] = []
        deadline = time.monotonic() + duration_s
        next_t = time.monotonic()
        try:
            while time.monotonic() < deadline:
                ticks.append(compact_tick(controller.tick()))
                next_t += INTERVAL_S
                time.sleep(max(next_t - time.monotonic(), 0.0))
        finally:
            hv.close()
            poller.stop()
        window_s = policies.default.rate_window_s
        return {"mode": mode, "ticks": ticks, "reports": poller.reports, "window_s": window_s}
    finally:
        lab.down(names)
        lab.close()


def _share(a: dict[str, float], b: dict[str, float], key: str) -> float:
    span_us = (b["up"] - a["up"]) * 1e6
    return max(b.get(key, 0) - a.get(key, 0), 0) / span_us if span_us > 0 else 0.0


def truth_of(
    reports: list[tuple[float, dict[str, float]]], t: float, span_s: float = INTERVAL_S
) -> str | None:
    """The truth over the ``span_s`` seconds that ended at host time ``t`` (the class's own
    rate window by default in ``analyse``); None when no two reports bracket it."""
    upto = [r for s, r in reports if s <= t]
    before = [r for s, r in reports if s <= t - span_s]
    if not upto or not before or upto[-1]["up"] <= before[-1]["up"]:
        return None
    a, b = before[-1], upto[-1]
    inside = [r for s, r in reports if t - span_s < s <= t]
    cg = _share(a, b, "cg_psi_some_total")
    own = _share(a, b, "psi_some_total") - cg
    cg_kills = b.get("cg_oom_kill", 0) - a.get("cg_oom_kill", 0)
    global_kills = b["oom_kill"] - a["oom_kill"] - cg_kills
    if (
        own >= PSI_HARM
        or max(r["pass_ms"] for r in inside) >= PASS_HARM_MS
        or max(r["alloc_us_mib"] for r in inside) >= ALLOC_HARM_US_PER_MIB
        or global_kills > 0
    ):
        return "harm"
    if cg_kills > 0 or cg >= PSI_HARM:
        return "cgroup"
    return "calm"


def agrees(klass: str, truth: str) -> bool:
    if truth == "harm":
        return klass in {str(k) for k in PRESSURE_CLASSES}
    return klass in {str(k) for k in CALM_CLASSES}


def analyse(raw: dict[str, Any], per_window: bool = True) -> dict[str, Any]:
    """Per scenario: the confusion table, agreement rates, the guest's own figures. The truth
    is taken over the class's rate window (``per_window``), or over the tick alone."""
    out: dict[str, Any] = {}
    for sc in SCENARIOS:
        name = sc.spec.domain_name
        reports = raw["reports"].get(name, [])
        table: Counter[tuple[str, str]] = Counter()
        settled: Counter[tuple[str, str]] = Counter()
        missing = 0
        changed_t: float | None = None
        last_truth: str | None = None
        actions: Counter[str] = Counter()
        span_s = raw["window_s"] if per_window else INTERVAL_S
        for tick in raw["ticks"]:
            g = tick["guests"].get(name)
            if g is None:
                continue
            truth = truth_of(reports, tick["t"], span_s)
            if truth is None:
                missing += 1
                continue
            if truth != last_truth:
                changed_t = tick["t"] if last_truth is not None else None
                last_truth = truth
            actions[g["action"]] += 1
            table[(g["klass"], truth)] += 1
            if changed_t is None or tick["t"] - changed_t >= raw["window_s"]:
                settled[(g["klass"], truth)] += 1
        counted, kept = sum(table.values()), sum(settled.values())
        agreed = sum(n for (k, t), n in table.items() if agrees(k, t))
        agreed_kept = sum(n for (k, t), n in settled.items() if agrees(k, t))
        out[sc.scenario] = {
            "table": {f"{k}|{t}": n for (k, t), n in sorted(table.items())},
            "counted": counted,
            "agreed": agreed,
            "rate": agreed / counted if counted else None,
            "excluded": counted - kept,
            "rate_settled": agreed_kept / kept if kept else None,
            "missing": missing,
            "actions": dict(actions),
            "peak": _peaks(reports),
        }
    return out


def _peaks(reports: list[tuple[float, dict[str, float]]]) -> dict[str, float]:
    if len(reports) < 2:
        return {}
    a, b = reports[0][1], reports[-1][1]
    return {
        "psi_some_avg10_max": max(r["psi_some_avg10"] for _, r in reports),
        "pass_ms_max": max(r["pass_ms"] for _, r in reports),
        "oom_kill": b["oom_kill"] - a["oom_kill"],
        "cg_oom_kill": b.get("cg_oom_kill", 0) - a.get("cg_oom_kill", 0),
        "allocstall": b["allocstall"] - a["allocstall"],
        "min_available_mib": min(r["MemAvailable"] for _, r in reports) // 1024,
    }


def render(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Class against the guest's own truth (benchmarks/lab/truth.py)",
        "",
        "Truth per tick from the guest's ABREPORT only, over the class's rate window (10 s) "
        f"ending at the tick unless the section says otherwise: `harm` = own PSI some >= "
        f"{PSI_HARM:.0%} of the time (cgroup's stalls excluded), or memload pass >= "
        f"{PASS_HARM_MS:.0f} ms, or "
        f"allocation >= {ALLOC_HARM_US_PER_MIB / 1000:.0f} ms/MiB, or a global OOM kill; "
        "`cgroup` = the cgroup's kills or stalls only; `calm` = neither. Agreement: harm with a "
        "pressure class, calm/cgroup with `none` or `cgroup-oom`. The table counts every tick; "
        "the second rate leaves out the ticks in the first rate window (10 s) after the truth "
        "changed (a class is measured over that window and lags).",
        "",
    ]
    for mode, per in results.items():
        lines += [f"## {mode}", ""]
        for sc in SCENARIOS:
            r = per[sc.scenario]
            rate = "n/a" if r["rate"] is None else f"{r['rate']:.1%}"
            settled = "n/a" if r["rate_settled"] is None else f"{r['rate_settled']:.1%}"
            lines += [
                f"### {sc.scenario}: {sc.what} (`{sc.workload}`, {sc.mem_mib} MiB, "
                f"squeezed to {sc.squeeze_mib} MiB)",
                "",
                f"agreement **{rate}** of all {r['counted']} ticks ({r['agreed']} agree); "
                f"{settled} without the {r['excluded']} ticks in the first rate window after a "
                f"truth change; no bracketing report: {r['missing']}; "
                f"actions {r['actions']}; guest: {r['peak']}",
                "",
                "| class \\ truth | calm | cgroup | harm |",
                "|---|---|---|---|",
            ]
            classes = sorted({k.split("|")[0] for k in r["table"]})
            for k in classes:
                row = [str(r["table"].get(f"{k}|{t}", 0)) for t in ("calm", "cgroup", "harm")]
                lines.append(f"| {k} | " + " | ".join(row) + " |")
            lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="observe,live")
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--analyze-only", type=Path)
    args = ap.parse_args()
    raw_dir = args.out / "tmp"
    raw_dir.mkdir(parents=True, exist_ok=True)
    if args.analyze_only:
        raws = json.loads(args.analyze_only.read_text())
    else:
        raws = {}
        with lab_lock("truth benchmark"):
            for mode in args.modes.split(","):
                say(f"truth: {mode} for {args.duration:.0f} s")
                raws[mode] = run(mode, args.duration)
        (raw_dir / "truth-raw.json").write_text(json.dumps(raws))
    results = {mode: analyse(raw) for mode, raw in raws.items()}
    results |= {
        f"{mode}, truth over the tick alone (2 s)": analyse(raw, per_window=False)
        for mode, raw in raws.items()
    }
    (args.out / "truth.md").write_text(render(results) + "\n")
    say(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
