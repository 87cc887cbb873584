"""The burst safety net: the lab benchmark's spike scenario with deflate-on-OOM on and off.

    python -m benchmarks.lab.burst [--variants ad-qmp,ad-off,...] [--interval 2] [--out DIR]
    python -m benchmarks.lab.burst --analyze-only benchmarks/results/tmp/burst-raw.json

The spike scenario of ``benchmarks.lab`` (two 512 MiB guests that jump by +40 MiB and by
+224 MiB over what they held while the controller shrank them, an idle 1 GiB bystander), run
by the same runner and analysed by the same analysis, in these variants:

- ``plain-qmp`` / ``plain-off``: balloon without deflate-on-OOM, autoballoon with the 6.12
  counters (``extended_stats = "qmp"``, the default) / without them (``"off"``): the
  ``qmp`` and ``off`` rows of lab.md, measured again at this commit;
- ``ad-qmp`` / ``ad-off``: the same with ``<memballoon autodeflate='on'>`` on every guest: the
  guest takes balloon pages back itself before its OOM killer runs;
- ``ad-qmp-small`` / ``ad-off-small``: deflate-on-OOM, and a small configured headroom
  (``SMALL_HEADROOM``) instead of the preset's: does the headroom still matter once the guest
  can help itself?

Policy: the aggressive preset (proactive), as in lab.md. One run per variant, freshly booted
guests each time. Writes ``<out>/burst.md``; the raw data to ``<out>/tmp/burst-raw.json`` (not
committed), which ``--analyze-only`` turns into the report again without the lab. The lab lock
is held per pair of variants (about 6 minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoballoon.core.policy import PolicySet
from autoballoon.report import GuestRecord
from benchmarks.common import RESULTS, header, machine, say
from benchmarks.lab.analysis import RAW_FORMAT, analyze_run, check_format
from benchmarks.lab.render import _f, _waited, short
from benchmarks.lab.runner import run_retrying
from benchmarks.lab.scenarios import Scenario, scenarios
from contrib.lab import lab_lock, lock
from contrib.lab.policies import preset_policies

SMALL_HEADROOM = {
    "headroom_mib": 16,
    "headroom_ratio": 0.0,
    "low_water_mib": 8,
    "low_water_ratio": 0.0,
}
"""The small configured headroom: 16 MiB whatever the size (the preset: the larger of 48 MiB
and 10 %), low water moved under it to keep the dead band open."""


@dataclass(frozen=True)
class Variant:
    name: str
    autodeflate: bool
    mode: str
    """The lab benchmark's mode: ``qmp`` (the 6.12 counters) or ``off`` (standard stats)."""
    headroom: str
    """``preset`` or ``small``."""

    def policies(self) -> PolicySet:
        return preset_policies(**SMALL_HEADROOM) if self.headroom == "small" else preset_policies()

    def scenario(self) -> Scenario:
        (sc,) = [s for s in scenarios() if s.name == "spike"]
        guests = tuple(replace(g, autodeflate=self.autodeflate) for g in sc.guests)
        return replace(sc, guests=guests)


VARIANTS = (
    Variant("ad-qmp", True, "qmp", "preset"),
    Variant("ad-off", True, "off", "preset"),
    Variant("plain-qmp", False, "qmp", "preset"),
    Variant("plain-off", False, "off", "preset"),
    Variant("ad-qmp-small", True, "qmp", "small"),
    Variant("ad-off-small", True, "off", "small"),
)
BY_NAME = {v.name: v for v in VARIANTS}


def rule_count(run: Mapping[str, Any], rule: str) -> dict[str, int]:
    """Per guest: the ticks whose decision was made by ``rule``."""
    out = {name: 0 for name in run["guests"]}
    for tk in run["ticks"]:
        for name, g in tk["guests"].items():
            if name in out and GuestRecord.model_validate(g).decision.rule == rule:
                out[name] += 1
    return out


def summarize(run: Mapping[str, Any]) -> dict[str, Any]:
    """One variant's numbers: the lab analysis per guest, plus the self-deflates seen."""
    per_guest = analyze_run(run, None)
    selfdef = rule_count(run, "self-deflated")
    for name, g in per_guest.items():
        g["self_deflated_ticks"] = selfdef[name]
    return per_guest


def _total(per_guest: Mapping[str, Mapping[str, Any]], key: str) -> float | None:
    vals = [g[key] for g in per_guest.values()]
    return None if any(v is None for v in vals) else sum(vals)


def _by_role(per_guest: Mapping[str, Mapping[str, Any]], key: str) -> str:
    """The spike guests' values, small one first."""
    role = {g["role"]: g for g in per_guest.values()}
    return " / ".join(_f(role[r][key]) if r in role else "n/a" for r in ("small", "large"))


def render(raw: Mapping[str, Any]) -> str:
    runs: Sequence[Mapping[str, Any]] = raw["runs"]
    lines = [header("Burst safety net: deflate-on-OOM, the 6.12 counters, the headroom",
                    raw["machine"])]
    lines.append(
        "The spike scenario of `python -m benchmarks.lab` (lab.md), run by "
        "`python -m benchmarks.lab.burst`: " + raw["description"] + ". Controller: the "
        "daemon's tick every 2 s, policy the aggressive preset (proactive, headroom the larger "
        "of 48 MiB and 10 %, `pressure_block_s` 180 s); *small headroom*: "
        + ", ".join(f"`{k}` = {v}" for k, v in SMALL_HEADROOM.items()) + ". "
        "*deflate-on-OOM*: every guest's `<memballoon autodeflate='on'>`. *counters*: "
        "`extended_stats = \"qmp\"` (the 6.12 counters, the default) or `\"off\"`. One run "
        "per row on freshly booted guests; whole run " + f"{raw.get('wall_s', 0) / 60:.1f} min"
        + _waited(raw.get("lock_wait_s")) + "."
    )
    lines.append("")
    lines.append(
        "Columns, from the guests' own reports (ABREPORT) over the run: *OOM kills*, *stalls*: "
        "the guest's oom_kill and allocstall deltas (small / large spike guest); *thrash s*: "
        "seconds the guests' own counters classify as thrashing, global-reclaim or oom; "
        "*held back*: time-average of max - balloon size, summed over the three guests "
        "(memory the guests could not use); *large min*: the smallest balloon size of the "
        "large spike guest; *self-deflated*: ticks the controller's decision for a guest "
        "was the `self-deflated` rule (the guest took balloon pages back itself)."
    )
    lines.append("")
    lines.append(
        "| variant | deflate-on-OOM | counters | headroom | OOM kills (small / large) | "
        "stalls (small / large) | thrash s (small / large) | held back MiB | large min MiB | "
        "self-deflated ticks | other domains |"
    )
    lines.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for run in runs:
        v = BY_NAME[run["variant"]]
        per_guest = summarize(run)
        large = [g for g in per_guest.values() if g["role"] == "large"]
        lines.append(
            f"| {v.name} | {'on' if v.autodeflate else 'off'} | {v.mode} | {v.headroom} | "
            f"{_by_role(per_guest, 'oom_kills')} | {_by_role(per_guest, 'stalls')} | "
            f"{_by_role(per_guest, 'harm_s_guest')} | "
            f"{_f(_total(per_guest, 'reclaimed_avg_mib'))} | "
            f"{_f(large[0]['min_mib']) if large else 'n/a'} | "
            f"{_f(_total(per_guest, 'self_deflated_ticks'))} | "
            f"{', '.join(run['other_domains']) or 'none'} |"
        )
    bad = [r for r in runs if r["errors"]]
    if bad:
        lines.append("")
        for r in bad:
            lines.append(f"- {r['variant']}: {'; '.join(r['errors'])}")
    lines.append("")
    lines.append("Last decision per guest:")
    lines.append("")
    for run in runs:
        for name, g in summarize(run).items():
            lines.append(f"- {run['variant']} {short(name)}: {g['last_reason']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lab.burst", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(v.name for v in VARIANTS))
    ap.add_argument("--interval", type=float, default=2.0, help="tick interval (2 s)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where burst.md goes")
    ap.add_argument("--analyze-only", type=Path, metavar="RAW",
                    help="only turn a raw data file into burst.md")
    args = ap.parse_args(argv)
    if args.analyze_only:
        raw = json.loads(args.analyze_only.read_text())
        check_format(raw)
        (args.out / "burst.md").write_text(render(raw))
        return 0
    wanted = [w for w in args.variants.split(",") if w]
    unknown = set(wanted) - set(BY_NAME)
    if unknown:
        ap.error(f"unknown variant(s) {sorted(unknown)}; choose from {list(BY_NAME)}")
    chosen = [BY_NAME[w] for w in wanted]
    raw_path = args.out / "tmp" / "burst-raw.json"
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {
        "format": RAW_FORMAT,
        "machine": machine(),
        "description": chosen[0].scenario().what if chosen else "",
        "runs": [],
    }
    started = time.monotonic()
    for i in range(0, len(chosen), 2):
        pair = chosen[i : i + 2]
        with lab_lock(f"bench_burst {','.join(v.name for v in pair)}"):
            for v in pair:
                sc = v.scenario()
                say(f"{v.name}: booting {len(sc.guests)} guest(s), then {sc.duration_s:.0f} s")
                run = run_retrying(sc, v.mode, args.interval, v.policies())
                run["variant"] = v.name
                raw["runs"].append(run)
                for name, g in summarize(run).items():
                    say(f"  {short(name):14} oom {g['oom_kills']}, stalls {g['stalls']}, "
                        f"held back avg {_f(g['reclaimed_avg_mib'])} MiB, min "
                        f"{_f(g['min_mib'])} MiB, self-deflated ticks {g['self_deflated_ticks']}")
                raw_path.write_text(json.dumps(raw))
    raw["wall_s"] = time.monotonic() - started
    raw["lock_wait_s"] = lock.waited_s
    raw_path.write_text(json.dumps(raw))
    out = args.out / "burst.md"
    out.write_text(render(raw))
    say(f"wrote {out}; raw data {raw_path}; {raw['wall_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
