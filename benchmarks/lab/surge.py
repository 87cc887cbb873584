"""A sudden 256 MiB surge in a squeezed guest: how soon the default policy deflates it.

    python -m benchmarks.lab.surge [--variants plain,recommended] [--out DIR]
    python -m benchmarks.lab.surge --render-only RAW.json[.gz] [--out DIR]

The goal: a guest hit by a sudden 256 MiB surge gets its first deflate within one tick of the
balloon report that shows the surge, and is out of allocation stalls within 2 s.

Three identical guests side by side (the repeats): 512 MiB each, lab workload
``spike:64:320:AT`` (memload holds 64 MiB of anonymous memory, then 320 MiB from ``AT``
seconds after boot, and stays there; it grows by at most 64 MiB per 100 ms step), no swap,
balloon statistics every second (``<stats period='1'/>``). Two variants of the balloon device,
each on freshly booted guests, one after the other under one hold of the lab lock:

- ``plain``: the lab's balloon, no deflate-on-OOM, no free page reporting;
- ``recommended``: the project's recommended set-up, deflate-on-OOM (``autodeflate='on'``:
  the guest takes balloon pages back itself before its OOM killer runs) and free page
  reporting (``freePageReporting='on'``).

The surges are staggered (``AT`` of 90, 115 and 140 s of guest uptime) so that each guest has
the host's two cores to itself when its surge comes. After boot each guest is squeezed by hand
to ``SQUEEZE_MIB`` (its balloon set through libvirt, as an operator would), and the controller
starts only once every balloon has got there, so the squeeze is what it finds, not a change it
sees someone make. Then the real controller (``autoballoon.daemon.Controller`` over
``LibvirtHypervisor`` and the live actuator) ticks every 2 s in this process with the shipped
default policy (``policies/default.toml``, mode ``on-demand``) until the last guest is
``POST_S`` past its surge. The guests' own ABREPORT lines (one a second on the serial console)
are collected alongside.

Per guest, from the ticks and the guest's reports:

- surge start: guest uptime, the later of ``AT`` and the last report before memload's
  working set grew; on the host's clock through the guest's boot time (the smallest
  host stamp minus uptime over its reports);
- the allocation rate the guest really had (its reports' working set over time);
- the first balloon report that shows the surge: the first tick whose sample (QEMU's
  ``last-update``) has available memory ``SHOWS_MIB`` under the last pre-surge sample, or a
  rise of the alloc-stall, direct-scan or OOM-kill counters;
- the first deflate decision, and the ticks between the two (goal: at most 1);
- the time from surge start to the last report in which the guest's ``allocstall`` rose
  (goal: at most 2 s; a guest whose stalls the OOM killer ended does not count as out of
  them), its OOM kills, and the balloon's sizes over the run;
- the guest's own deflate (deflate-on-OOM): how far the balloon had grown, as the ticks read
  it, before and at the tick of our first deflate decision, the first tick that saw it grow,
  and the ticks decided by the ``self-deflated`` rule.

Writes ``<out>/surge.md`` and the raw data, gzipped, to ``<out>/raw/surge/surge.json.gz``;
``--render-only`` turns a raw file back into surge.md without the lab. A variant not run
(``--variants``) is carried over from the raw file already there, with its own commit. Lab
time about 4 minutes per variant, under the lab lock.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from autoballoon.backends.libvirt import LibvirtHypervisor
from autoballoon.config import DaemonConfig
from autoballoon.core.samples import (
    STAT_ALLOC_STALLS,
    STAT_AVAILABLE_MEMORY,
    STAT_DIRECT_SCANS,
    STAT_OOM_KILLS,
)
from autoballoon.daemon import Controller
from autoballoon.report import TickReport
from benchmarks.common import GUEST_PREFIX, RESULTS, header, machine, other_domains, say
from benchmarks.lab.runner import ConsolePoller, compact_tick
from contrib.lab import Guest, GuestSpec, Lab, field_policy_dir, lab_lock, lock, preset_policies

FORMAT = "surge-2"
OLD_FORMATS = ("surge-1",)
"""surge-1: one run, the plain variant, before there were variants."""
MEM_MIB = 512
BASE_MIB = 64
SURGE_MIB = 256
PEAK_MIB = BASE_MIB + SURGE_MIB
SQUEEZE_MIB = 256
SURGE_AT_S = (90, 115, 140)
POST_S = 45.0
INTERVAL_S = 2.0
STATS_PERIOD_S = 1
SHOWS_MIB = 32
"""Available memory this far under the last pre-surge sample shows the surge."""
ACTED_MIB = 8
"""Available memory this far under the last report before AT: memload has started (an idle
guest's MemAvailable moves by a few hundred KiB between reports)."""
GOAL_TICKS = 1
GOAL_STALLS_S = 2.0
MAX_RUN_S = 330.0
"""Hard cap on the controller's part of the run."""
WATCHED = (STAT_AVAILABLE_MEMORY, STAT_ALLOC_STALLS, STAT_DIRECT_SCANS, STAT_OOM_KILLS)

Report = tuple[float, dict[str, float]]


@dataclass(frozen=True)
class Variant:
    name: str
    autodeflate: bool
    free_page_reporting: bool
    what: str


VARIANTS = (
    Variant("plain", False, False,
            "the lab's balloon: no deflate-on-OOM, no free page reporting"),
    Variant("recommended", True, True,
            "the recommended set-up: deflate-on-OOM (`autodeflate='on'`) and free page "
            "reporting (`freePageReporting='on'`) on the balloon"),
)
BY_NAME = {v.name: v for v in VARIANTS}


def specs(variant: Variant = VARIANTS[0]) -> list[GuestSpec]:
    return [
        GuestSpec(f"{GUEST_PREFIX}surge-{i + 1}", MEM_MIB, f"spike:{BASE_MIB}:{PEAK_MIB}:{at}",
                  free_page_reporting=variant.free_page_reporting,
                  autodeflate=variant.autodeflate)
        for i, at in enumerate(SURGE_AT_S)
    ]


# ------------------------------------------------------------------------------------ run


def tick_record(rep: TickReport) -> dict[str, Any]:
    """``compact_tick`` plus, per guest, what the balloon's sample carried: QEMU's
    ``last_update`` (host wall clock, whole seconds), the report's age when read, and the
    counters this benchmark reads."""
    out = compact_tick(rep)
    for row in rep.guests:
        s = row.sample
        out["guests"][row.name]["sample"] = {
            "last_update": s.last_update,
            "stats_age_s": s.stats_age_s,
            "stats_period_s": s.stats_period_s,
            "stats": {k: s.stats[k] for k in WATCHED if k in s.stats},
        }
    return out


def _wait(what: str, cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.5)
    say(f"  gave up waiting for {what} after {timeout_s:.0f} s")
    return False


def _squeezed(g: Guest) -> bool:
    return g.balloon_actual_mib() <= SQUEEZE_MIB + 1


def run(variant: Variant) -> dict[str, Any]:
    """Boot, squeeze, tick until the last surge is ``POST_S`` old, tear down."""
    lab = Lab()
    sp = specs(variant)
    names = [s.domain_name for s in sp]
    errors: list[str] = []
    try:
        lab.down(names)
        t_boot = time.time()
        guests = lab.up(sp)
        boot_s = time.time() - t_boot
        say(f"  booted in {boot_s:.0f} s; squeezing to {SQUEEZE_MIB} MiB")
        for g in guests:
            g.set_balloon_mib(SQUEEZE_MIB)
        t_squeeze = time.time()
        for g in guests:
            if not _wait(f"{g.name} at {SQUEEZE_MIB} MiB", partial(_squeezed, g), 90.0):
                errors.append(f"{g.name}: balloon did not reach {SQUEEZE_MIB} MiB")
        squeeze_s = time.time() - t_squeeze
        others = other_domains(lab.conn)
        poller = ConsolePoller(guests)
        poller.start()
        ups = {g.name: (g.latest_report() or {}).get("up", 0.0) for g in guests}
        for g, at in zip(guests, SURGE_AT_S, strict=True):
            lead = at - ups[g.name]
            if lead < 20:
                errors.append(f"{g.name}: controller started only {lead:.0f} s before the surge")
        say(f"  squeezed in {squeeze_s:.0f} s; guest uptimes "
            + ", ".join(f"{u:.0f} s" for u in ups.values()) + "; controller starts")
        work = Path(tempfile.mkdtemp(prefix="ab-surge-"))
        policy_dir = field_policy_dir(work)  # the shipped default.toml, unchanged
        policies = preset_policies("default")
        hv = LibvirtHypervisor(stats_period_s=STATS_PERIOD_S, read_budget_s=INTERVAL_S / 2)
        config = DaemonConfig(interval_s=INTERVAL_S, policy_dir=policy_dir,
                              stats_period_s=STATS_PERIOD_S, include=tuple(names))
        controller = Controller(config, hv, policies)
        ticks: list[dict[str, Any]] = []
        t0 = time.time()
        hard = time.monotonic() + MAX_RUN_S
        next_t = time.monotonic()
        last_at = max(SURGE_AT_S)
        last_guest = names[SURGE_AT_S.index(last_at)]
        try:
            while time.monotonic() < hard:
                try:
                    ticks.append(tick_record(controller.tick()))
                except Exception as err:  # a benchmark reports, it does not die
                    errors.append(f"tick {len(ticks)}: {err!r}")
                reps = poller.reports[last_guest]
                if reps and reps[-1][1]["up"] >= last_at + POST_S:
                    break
                next_t += INTERVAL_S
                time.sleep(max(next_t - time.monotonic(), 0.0))
            else:
                errors.append(f"stopped at the {MAX_RUN_S:.0f} s cap")
        finally:
            t_end = time.time()
            hv.close()
            poller.stop()
        periods = {}
        for g in guests:
            try:
                periods[g.name] = g.stats_period_s()
            except Exception as err:
                errors.append(f"{g.name}: stats period: {err!r}")
        others = sorted(set(others) | set(other_domains(lab.conn)))
        return {
            "t_boot": t_boot, "boot_s": boot_s, "squeeze_s": squeeze_s, "t0": t0,
            "t_end": t_end, "ticks": ticks, "reports": poller.reports,
            "stats_periods": periods, "other_domains": others, "errors": errors,
        }
    finally:
        lab.down(names)
        lab.close()


# ------------------------------------------------------------------------------- analysis


def _mib(kib: float | None) -> float | None:
    return None if kib is None else kib / 1024


def guest_clock(reports: Sequence[Report]) -> float:
    """Host wall time of the guest's uptime 0: the smallest stamp minus uptime (a report is
    stamped when the poller, every 0.5 s, finds it, never before it was written)."""
    return min(stamp - r["up"] for stamp, r in reports)


def analyse_guest(name: str, at: float, raw: Mapping[str, Any]) -> dict[str, Any]:
    reps: list[Report] = sorted(raw["reports"][name], key=lambda x: x[1]["up"])
    out: dict[str, Any] = {"name": name, "at": at, "n_reports": len(reps)}
    if len(reps) < 3:
        out["error"] = "fewer than 3 reports"
        return out
    boot = guest_clock(reps)
    rs = [r for _, r in reps]
    gaps = [b["up"] - a["up"] for a, b in zip(rs, rs[1:], strict=False)]
    out["report_gap_s"] = {"median": statistics.median(gaps), "max": max(gaps)}
    # The first report in which memload acted: its working set moved off the base (grown,
    # or reset by a kill), it was restarted, or the guest stalled or killed. Between two
    # reports the OOM killer may already have taken it, so growth alone is not enough.
    pre_at = [r for r in rs if r["up"] < at]
    if not pre_at:
        out["error"] = "no report before the surge"
        return out
    ref = pre_at[-1]

    def acted(r: Mapping[str, float]) -> bool:
        return (r["ws_mib"] != BASE_MIB
                or (ref["MemAvailable"] - r["MemAvailable"]) / 1024 >= ACTED_MIB
                or any(r[k] > ref[k] for k in ("memload_restarts", "oom_kill", "allocstall")))

    first = next((i for i, r in enumerate(rs) if r["up"] >= at and acted(r)), None)
    if first is None:
        out["error"] = "memload never acted on the surge in the reports"
        return out
    before = rs[first - 1]
    start_up = max(at, before["up"])
    start_host = boot + start_up
    out |= {"start_up": start_up, "first_acted_s": rs[first]["up"] - start_up,
            "start_host": start_host, "avail_before_mib": before["MemAvailable"] / 1024,
            "memtotal_before_mib": before["MemTotal"] / 1024}
    after = [r for r in rs if r["up"] > start_up]

    # The allocation rate: the working set's growth between two reports of one memload (no
    # restart in between), and when it first held the whole +256 MiB.
    pairs = list(zip([before, *after], after, strict=False))
    steps = [(y["ws_mib"] - x["ws_mib"]) / (y["up"] - x["up"]) for x, y in pairs
             if y["ws_mib"] > x["ws_mib"] and y["memload_restarts"] == x["memload_restarts"]
             and y["up"] > x["up"]]
    full = next((r for r in after if r["ws_mib"] >= PEAK_MIB), None)
    killed = next((r for r in after if r["oom_kill"] > before["oom_kill"]), None)
    restarts0 = before["memload_restarts"]
    climb = [r for r in after if r["memload_restarts"] == restarts0]
    out |= {
        "ws_peak_before_kill_mib": max((r["ws_mib"] for r in climb), default=BASE_MIB),
        "ws_full_s": None if full is None else full["up"] - start_up,
        "first_kill_s": None if killed is None else killed["up"] - start_up,
        "alloc_rate_max_mib_s": max(steps, default=None),
        "alloc_rate_median_mib_s": statistics.median(steps) if steps else None,
    }

    # The guest's own view: first report showing the surge, stalls, kills, the deflate landing.
    shows = next((r for r in after
                  if r["MemAvailable"] / 1024 <= out["avail_before_mib"] - SHOWS_MIB
                  or r["allocstall"] > before["allocstall"] or r["oom_kill"] > before["oom_kill"]),
                 None)
    out["guest_shows_s"] = None if shows is None else shows["up"] - start_up
    rises = [b for a, b in zip([before, *after], after, strict=False)
             if b["allocstall"] > a["allocstall"]]
    last = rs[-1]
    out |= {
        "stalls": last["allocstall"] - before["allocstall"],
        "oom_kills": last["oom_kill"] - before["oom_kill"],
        "memload_restarts": last["memload_restarts"] - restarts0,
        "stall_end_s": rises[-1]["up"] - start_up if rises else 0.0,
        "stalling_at_end": bool(rises) and rises[-1] is after[-1],
        "observed_until_s": last["up"] - start_up,
    }
    grew = next((r for r in after
                 if r["MemTotal"] / 1024 >= out["memtotal_before_mib"] + SHOWS_MIB), None)
    out["memtotal_grew_s"] = None if grew is None else grew["up"] - start_up

    # The controller's view: ticks, the first sample that shows the surge, the first deflate.
    rows = [(i, tk["t"], tk["guests"][name]) for i, tk in enumerate(raw["ticks"])
            if name in tk.get("guests", {})]
    # last_update is in whole seconds: a report stamped within 1 s before the start may have
    # been made after it, so the baseline is the last one certainly made before.
    pre = [x for x in rows if 0 < x[2]["sample"]["last_update"] <= start_host - 1]
    out["ticks_before_surge"] = len([x for x in rows if x[1] < start_host])
    if not pre:
        out["error"] = "no balloon report before the surge"
        return out
    base = pre[-1][2]
    bstats = base["sample"]["stats"]

    def shows_surge(g: Mapping[str, Any]) -> str | None:
        st = g["sample"]["stats"]
        avail = st.get(STAT_AVAILABLE_MEMORY)
        if avail is not None and STAT_AVAILABLE_MEMORY in bstats and (
                bstats[STAT_AVAILABLE_MEMORY] - avail) / 1024 ** 2 >= SHOWS_MIB:
            return "available"
        for key, what in ((STAT_ALLOC_STALLS, "alloc-stalls"),
                          (STAT_DIRECT_SCANS, "direct-scans"), (STAT_OOM_KILLS, "oom-kills")):
            if key in st and key in bstats and st[key] > bstats[key]:
                return what
        return None

    later = [x for x in rows if x[0] > pre[-1][0]]
    seen = next((x for x in later if shows_surge(x[2])), None)
    deflate = next((x for x in later if x[2]["decision"]["action"] == "deflate"), None)
    out["base_available_mib"] = _mib(bstats.get(STAT_AVAILABLE_MEMORY, 0) / 1024)
    if seen is not None:
        i, t, g = seen
        lu = g["sample"]["last_update"]
        out |= {"seen_tick": i, "seen_t_s": t - start_host, "seen_report_s": lu - start_host,
                "seen_age_s": g["sample"]["stats_age_s"], "seen_by": shows_surge(g),
                "seen_class": g["class"], "seen_rule": g["decision"]["rule"],
                "seen_available_mib": _mib(g["available_kib"])}
    if deflate is not None:
        i, t, g = deflate
        d = g["decision"]
        out |= {"deflate_tick": i, "deflate_t_s": t - start_host, "deflate_rule": d["rule"],
                "deflate_class": g["class"], "deflate_reason": d["reason"],
                "deflate_from_mib": g["actual_kib"] / 1024,
                "deflate_to_mib": d["target_kib"] / 1024, "deflate_result": d["result"]}
        if seen is not None:
            out["ticks_between"] = i - seen[0]
    # The guest's own deflate (deflate-on-OOM): the balloon growing with no decision of ours
    # behind it. A tick reads the size before it decides, so up to and including the tick of
    # our first deflate decision every growth is the guest's.
    base_mib = base["actual_kib"] / 1024
    upto = later if deflate is None else [x for x in later if x[0] <= deflate[0]]
    grew_self = next((x for x in upto if x[2]["actual_kib"] / 1024 >= base_mib + 1), None)
    self_ticks = [x for x in later if x[2]["decision"]["rule"] == "self-deflated"]
    out |= {
        "base_actual_mib": base_mib,
        "self_grown_mib": max((x[2]["actual_kib"] / 1024 for x in upto), default=base_mib)
        - base_mib,
        "self_grew_t_s": None if grew_self is None else grew_self[1] - start_host,
        "self_deflated_ticks": len(self_ticks),
        "self_deflated_t_s": self_ticks[0][1] - start_host if self_ticks else None,
    }
    decided = [(t - start_host, g["class"], g["decision"]) for _, t, g in later
               if g["decision"]["action"] != "hold"]
    out["changes"] = [{"t_s": round(dt, 1), "class": k, "action": d["action"], "rule": d["rule"],
                       "to_mib": round(d["target_kib"] / 1024), "result": d["result"]}
                      for dt, k, d in decided]
    traj: list[tuple[float, float]] = []
    for _, t, g in rows:
        a = g["actual_kib"] / 1024
        if not traj or abs(a - traj[-1][1]) >= 1:
            traj.append((round(t - start_host, 1), round(a)))
    out["trajectory"] = traj
    out["end_mib"] = float(traj[-1][1]) if traj else None
    out["classes_after"] = [g["class"] for _, t, g in later][:8]
    ages = [g["sample"]["stats_age_s"] for _, _, g in rows if g["sample"]["stats_age_s"]]
    out["age_median_s"] = statistics.median(ages) if ages else None
    return out


def analyse(raw: Mapping[str, Any], vrun: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One variant's run (an entry of ``raw["runs"]``), per guest."""
    return [analyse_guest(s.domain_name, at, vrun["run"])
            for s, at in zip(specs(BY_NAME[vrun["variant"]]), raw["surge_at_s"], strict=True)]


# --------------------------------------------------------------------------------- render


def _f(v: Any, fmt: str = "{:.1f}") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return fmt.format(v) if isinstance(v, float) else str(v)


def _spread(vals: Sequence[Any], fmt: str = "{:.1f}") -> str:
    got = [v for v in vals if v is not None]
    if not got:
        return "n/a"
    med = statistics.median(got)
    missing = f" ({len(vals) - len(got)} n/a)" if len(got) < len(vals) else ""
    return f"{fmt.format(med)} [{fmt.format(min(got))}, {fmt.format(max(got))}]{missing}"


COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("surge at (guest uptime s)", "start_up", "{:.1f}"),
    ("available before MiB", "avail_before_mib", "{:.0f}"),
    ("memload acted in the report at s", "first_acted_s", "{:.1f}"),
    ("alloc rate MiB/s, fastest report step", "alloc_rate_max_mib_s", "{:.0f}"),
    ("first OOM kill reported s", "first_kill_s", "{:.1f}"),
    (f"+{SURGE_MIB} MiB held s", "ws_full_s", "{:.1f}"),
    ("guest's own report shows it s", "guest_shows_s", "{:.1f}"),
    ("balloon report that shows it s", "seen_report_s", "{:.1f}"),
    ("tick that reads it s", "seen_t_s", "{:.1f}"),
    ("first deflate tick s", "deflate_t_s", "{:.1f}"),
    ("ticks report -> deflate", "ticks_between", "{:.0f}"),
    ("first deflate to MiB", "deflate_to_mib", "{:.0f}"),
    ("balloon grew by itself, by the first deflate tick MiB", "self_grown_mib", "{:.0f}"),
    ("tick that saw it grow by itself s", "self_grew_t_s", "{:.1f}"),
    ("`self-deflated` ticks", "self_deflated_ticks", "{:.0f}"),
    ("guest MemTotal grew s", "memtotal_grew_s", "{:.1f}"),
    ("stalls stop s", "stall_end_s", "{:.1f}"),
    ("alloc stalls", "stalls", "{:.0f}"),
    ("OOM kills", "oom_kills", "{:.0f}"),
    ("balloon at the end MiB", "end_mib", "{:.0f}"),
)


def goal_deflate(per: Sequence[Mapping[str, Any]]) -> list[bool]:
    return [g.get("ticks_between") is not None and g["ticks_between"] <= GOAL_TICKS for g in per]


def goal_stalls(per: Sequence[Mapping[str, Any]]) -> tuple[list[bool], list[bool]]:
    """Per guest: the allocstall counter stopped rising within the goal (and not still rising
    at the end); and that without an OOM kill (the goal)."""
    counter = [g.get("stall_end_s") is not None and g["stall_end_s"] <= GOAL_STALLS_S
               and not g.get("stalling_at_end") for g in per]
    return counter, [c and not g.get("oom_kills") for c, g in zip(counter, per, strict=True)]


def _verdicts(per: Sequence[Mapping[str, Any]], variant: Variant) -> list[str]:
    pol = preset_policies("default").default
    lines = []
    tb = [g.get("ticks_between") for g in per]
    met = goal_deflate(per)
    lines.append(
        f"- **First deflate within {GOAL_TICKS} tick of the report that shows the surge: "
        f"{'met' if all(met) else 'missed'}** ({sum(met)} of {len(per)} guests; ticks from "
        "the tick that first read a balloon report showing the surge to the first deflate "
        "decision: " + ", ".join(_f(v) for v in tb) + "; the first deflate's rule: "
        + ", ".join(f"`{g.get('deflate_rule', 'none')}`" for g in per) + ")."
    )
    for g in per:
        if g.get("deflate_tick") is None:
            own = ("" if not g.get("self_grown_mib") else
                   f"; the balloon grew by itself by {g['self_grown_mib']:.0f} MiB, first seen "
                   f"by the tick at {_f(g.get('self_grew_t_s'))} s, `self-deflated` ticks "
                   f"{g.get('self_deflated_ticks')}")
            lines.append(f"  - {short(g['name'])}: no deflate at all after the surge "
                         f"(classes after it: {', '.join(g.get('classes_after', []))}{own}).")
        elif g.get("ticks_between") is None:
            lines.append(f"  - {short(g['name'])}: no tick read a balloon report that shows "
                         f"the surge; the deflate came at {_f(g['deflate_t_s'])} s "
                         f"(`{g['deflate_rule']}`, class `{g['deflate_class']}`).")
        elif g["ticks_between"]:
            avail = g["seen_available_mib"]
            band = ""
            if avail is not None and g["seen_class"] == "none":
                size = g["deflate_from_mib"]
                low = max(pol.low_water_mib, pol.low_water_ratio * size)
                head = max(pol.headroom_mib, pol.headroom_ratio * size)
                if low <= avail < head:
                    band = (f", inside the dead band between the low-water mark ({low:.0f} MiB) "
                            f"and the headroom ({head:.0f} MiB) at {size:.0f} MiB, with no "
                            "stall or kill counted yet")
            lines.append(
                f"  - {short(g['name'])}: the tick at {_f(g['seen_t_s'])} s read the surge "
                f"({g['seen_by']}, {_f(avail, '{:.0f}')} MiB available{band}) as class "
                f"`{g['seen_class']}` and held (rule `{g['seen_rule']}`); the deflate came at "
                f"{_f(g['deflate_t_s'])} s (`{g['deflate_rule']}`, class "
                f"`{g['deflate_class']}`).")
    se = [g.get("stall_end_s") for g in per]
    counter, met2 = goal_stalls(per)
    kills = [g.get("oom_kills") for g in per]
    ended_by_kill = sum(1 for c, g in zip(counter, per, strict=True) if c and g.get("oom_kills"))
    lines.append(
        f"- **Out of stalls within {GOAL_STALLS_S:.0f} s of the surge, without an OOM kill: "
        f"{'met' if all(met2) else 'missed'}** ({sum(met2)} of {len(per)} guests). The "
        f"allocstall counter stopped rising within {GOAL_STALLS_S:.0f} s in {sum(counter)} "
        f"of {len(per)} (last rise " + ", ".join(f"{_f(v)} s" for v in se) + " after the "
        "surge start); OOM kills " + ", ".join(_f(k) for k in kills) + "."
        + (f" In {ended_by_kill} of them the stalls stopped early because the OOM killer "
           "killed the surge, not because memory arrived." if ended_by_kill else "")
    )
    for g, ok in zip(per, met2, strict=True):
        if ok or "error" in g:
            continue
        why = []
        if g.get("oom_kills"):
            when = ("before the first deflate decision"
                    + (f" ({_f(g['deflate_t_s'])} s)" if g.get("deflate_t_s") is not None
                       else "")
                    if _before(g) else f"after the first deflate decision at "
                    f"{_f(g['deflate_t_s'])} s ({g['deflate_from_mib']:.0f} -> "
                    f"{g['deflate_to_mib']:.0f} MiB, `{g['deflate_rule']}`: "
                    f"+{g['deflate_to_mib'] - g['deflate_from_mib']:.0f} MiB of the "
                    f"{SURGE_MIB - g['avail_before_mib']:.0f} MiB the surge lacked; the "
                    f"guest's MemTotal grown at {_f(g.get('memtotal_grew_s'))} s)")
            why.append(f"{g['oom_kills']} OOM kill(s), the first reported at "
                       f"{_f(g['first_kill_s'])} s, {when}")
        if g.get("stalling_at_end"):
            why.append("still stalling at the end of the run")
        elif (g.get("stall_end_s") or 0) > GOAL_STALLS_S:
            landed = (f"the guest's MemTotal grown at {_f(g.get('memtotal_grew_s'))} s"
                      if not variant.autodeflate else
                      f"before it the balloon had grown by itself by "
                      f"{_f(g.get('self_grown_mib'), '{:.0f}')} MiB (first seen by the tick "
                      f"at {_f(g.get('self_grew_t_s'))} s), less than the "
                      f"{SURGE_MIB - (g.get('avail_before_mib') or 0):.0f} MiB the surge "
                      "lacked")
            why.append(f"allocstall last rose {_f(g['stall_end_s'])} s after the surge start "
                       f"({g['stalls']} stalls; the first deflate decided at "
                       f"{_f(g.get('deflate_t_s'))} s, {landed}; memload first held the "
                       f"whole +{SURGE_MIB} MiB at {_f(g.get('ws_full_s'))} s)")
        lines.append(f"  - {short(g['name'])}: " + "; ".join(why) + ".")
    if variant.autodeflate:
        free = [not g.get("oom_kills") and "error" not in g for g in per]
        lines.append(
            f"- **OOM kill avoided: {'yes' if all(free) else 'no'}** ({sum(free)} of "
            f"{len(per)} guests without an OOM kill; kills " + ", ".join(_f(k) for k in kills)
            + "). The guest's own deflate (deflate-on-OOM): by the tick of our first deflate "
            "decision the balloon had grown by itself by "
            + ", ".join(f"{_f(g.get('self_grown_mib'), '{:.0f}')} MiB" for g in per)
            + " (first seen grown by the tick at "
            + ", ".join(f"{_f(g.get('self_grew_t_s'))} s" for g in per)
            + "); the `self-deflated` rule decided "
            + ", ".join(_f(g.get("self_deflated_ticks")) for g in per) + " tick(s)."
        )
    memtotal = (f"the guest's MemTotal had grown at "
                f"{_spread([g.get('memtotal_grew_s') for g in per])}" if not variant.autodeflate
                else "the guest's MemTotal does not show the deflate (with deflate-on-OOM the "
                "balloon's pages stay in MemTotal)")
    n_before = sum(1 for g in per if _before(g))
    situation = (
        f"{_spread([g.get('avail_before_mib') for g in per], '{:.0f}')} MiB available for a "
        f"{SURGE_MIB} MiB surge arriving at up to "
        f"{_spread([g.get('alloc_rate_max_mib_s') for g in per], '{:.0f}')} MiB/s")
    if n_before:
        last = (f" The OOM killer came first: the first kill was in the guest's report before "
                f"the first deflate decision in {n_before} of {len(per)} guests, which had "
                f"{situation}.")
    elif any(kills):
        last = (f" No guest reported its first OOM kill before the first deflate decision; "
                f"they had {situation}.")
    else:
        last = f" No guest reported an OOM kill; they had {situation}."
    lines.append(
        "- Where the time goes (median [min, max] over the guests, seconds after the surge "
        "start): the guest's own report shows it at "
        f"{_spread([g.get('guest_shows_s') for g in per])} and reports the first OOM kill "
        f"at {_spread([g.get('first_kill_s') for g in per])}; "
        f"the first balloon report the controller read that shows it was made at "
        f"{_spread([g.get('seen_report_s') for g in per])} and read by the tick at "
        f"{_spread([g.get('seen_t_s') for g in per])}; the first deflate was decided at "
        f"{_spread([g.get('deflate_t_s') for g in per])}; {memtotal}; memload first held the "
        f"whole +{SURGE_MIB} MiB (after its restarts) at "
        f"{_spread([g.get('ws_full_s') for g in per])}."
        f" With a statistics period of {STATS_PERIOD_S} s and a tick of {INTERVAL_S:.0f} s, "
        f"what a report shows reaches a decision up to {STATS_PERIOD_S + INTERVAL_S:.0f} s "
        "later, and every other report is never read; here the reports a tick read were "
        "stamped (whole seconds) "
        f"{_spread([g.get('age_median_s') for g in per], '{:.2f}')} s before it."
        + last
    )
    return lines


def _before(g: Mapping[str, Any]) -> bool:
    """The guest reported its first OOM kill before the first deflate was decided."""
    kill, deflate = g.get("first_kill_s"), g.get("deflate_t_s")
    return kill is not None and (deflate is None or kill <= deflate)


def short(name: str) -> str:
    return name.removeprefix(GUEST_PREFIX)


def _device(vrun: Mapping[str, Any]) -> str:
    """The balloon device as the controller read it in the run's ticks."""
    seen: dict[str, set[bool]] = {"autodeflate": set(), "free_page_reporting": set()}
    for tk in vrun["run"]["ticks"]:
        for g in tk["guests"].values():
            for k, vals in seen.items():
                if k in g:
                    vals.add(bool(g[k]))

    def one(k: str, what: str) -> str:
        v = seen[k]
        return (f"{what} {'on' if v == {True} else 'off' if v == {False} else 'mixed'}"
                if v else f"{what} n/a")
    return (one("autodeflate", "deflate-on-OOM") + ", "
            + one("free_page_reporting", "free page reporting"))


def _setup(raw: Mapping[str, Any], vrun: Mapping[str, Any]) -> str:
    run = vrun["run"]
    m = vrun["machine"]
    periods = sorted({str(v) for v in run.get("stats_periods", {}).values()})
    at = ("" if m["commit"] == raw["machine"]["commit"]
          else f"Measured at commit {m['commit']} ({m['date']}), before the other variant. ")
    return (
        f"{at}Balloon: {BY_NAME[vrun['variant']].what}; statistics period {STATS_PERIOD_S} s "
        f"(live XML after the run: {', '.join(periods) or 'n/a'} s); as the controller read "
        f"it: {_device(vrun)}. Boot {run['boot_s']:.0f} s, squeeze {run['squeeze_s']:.0f} s, "
        f"{len(run['ticks'])} ticks over {run['t_end'] - run['t0']:.0f} s; lab time "
        f"{vrun['wall_s'] / 60:.1f} min. Other running domains on the host: "
        f"{', '.join(run['other_domains']) or 'none'}."
    )


def render(raw: Mapping[str, Any]) -> str:
    runs: Sequence[Mapping[str, Any]] = raw["runs"]
    pers = [analyse(raw, r) for r in runs]
    out = [header("A sudden 256 MiB surge in a squeezed guest", raw["machine"])]
    out.append(
        f"`python -m benchmarks.lab.surge`: three {MEM_MIB} MiB lab guests (Linux 6.12, QEMU "
        f"TCG, one vCPU each) side by side, each the same scenario once: lab workload "
        f"`spike:{BASE_MIB}:{PEAK_MIB}:AT` (memload holds {BASE_MIB} MiB of anonymous memory, "
        f"then {PEAK_MIB} MiB from AT s of uptime on, +{SURGE_MIB} MiB, growing by at most "
        f"64 MiB per 100 ms step; no swap), AT = "
        + ", ".join(f"{a} s" for a in raw["surge_at_s"])
        + " (staggered, so each surge has the host's cores to itself). Each guest squeezed by "
        f"hand to {SQUEEZE_MIB} MiB after boot; then the daemon's `Controller` ticking every "
        f"{INTERVAL_S:.0f} s in the benchmark's process with the shipped "
        "`policies/default.toml` (mode `on-demand`, unchanged), until the last guest was "
        f"{POST_S:.0f} s past its surge. Two balloon devices, each on freshly booted guests, "
        "one after the other: "
        + "; ".join(f"*{v.name}*, {v.what}" for v in VARIANTS)
        + f". Variants in this file: {', '.join(r['variant'] for r in runs)}; whole run "
        f"{(raw['wall_s'] - raw.get('lock_wait_s', 0)) / 60:.1f} min"
        + (f" (plus {raw['lock_wait_s']:.0f} s waiting for the lab lock)"
           if raw.get("lock_wait_s") else "")
        + "."
    )
    out.append("")
    out.append(
        "Times are seconds after the surge start: the later of AT and the guest's last report "
        "before memload acted (guest uptime, put on the host clock by the guest's "
        "boot time: smallest poller stamp minus uptime). *guest's own report shows it*: first "
        f"ABREPORT with MemAvailable {SHOWS_MIB} MiB under the last one before the surge, or "
        "allocstall up. *balloon report that shows it*: QEMU's `last-update` (whole seconds, "
        "so up to 1 s early) of the first sample a tick read that shows the surge (available "
        f"{SHOWS_MIB} MiB under the last pre-surge sample, or the alloc-stall, direct-scan or "
        "OOM-kill counter up). *ticks report -> deflate*: ticks from the tick that read that "
        "sample to the first deflate decision (0: the same tick). *balloon grew by itself*: "
        "the balloon's size as the ticks read it (a tick reads before it decides), at most, "
        "up to and including the tick of our first deflate decision, over its size before the "
        "surge: the guest's own deflate (deflate-on-OOM); *tick that saw it grow by itself*: "
        "the first of those ticks 1 MiB or more over it. *`self-deflated` ticks*: ticks whose "
        "decision was the `self-deflated` rule (the guest took balloon pages back itself). "
        f"*guest MemTotal grew*: the first ABREPORT with MemTotal {SHOWS_MIB} MiB over its "
        "pre-surge value (the deflate has landed; with deflate-on-OOM the balloon's pages "
        "stay in MemTotal, so n/a). *stalls stop*: the guest's last report (to the end of the "
        "run) in which allocstall rose. *memload acted*: the first report after AT with "
        f"memload's working set off its {BASE_MIB} MiB, MemAvailable {ACTED_MIB} MiB down, or "
        "a stall, kill or restart. *alloc rate*: the fastest growth of memload's working set "
        "between two of the guest's reports (one memload, no restart between them). *first "
        f"OOM kill reported*, *+{SURGE_MIB} MiB held*: the first report with oom_kill up, and "
        f"with memload holding {PEAK_MIB} MiB (after its restarts)."
    )
    out.append("")
    out.append("## Summary")
    out.append("")
    out.append(f"| variant | first deflate within {GOAL_TICKS} tick of the report | out of "
               f"stalls within {GOAL_STALLS_S:.0f} s, no OOM kill | OOM kills | guests "
               "without an OOM kill | stalls stop s | alloc stalls | balloon grew by itself "
               "MiB | `self-deflated` ticks |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for vrun, per in zip(runs, pers, strict=True):
        d, (_, st) = goal_deflate(per), goal_stalls(per)
        out.append(
            f"| {vrun['variant']} | {'met' if all(d) else 'missed'} ({sum(d)}/{len(per)}) | "
            f"{'met' if all(st) else 'missed'} ({sum(st)}/{len(per)}) | "
            + ", ".join(_f(g.get("oom_kills")) for g in per) + " | "
            f"{sum(1 for g in per if not g.get('oom_kills') and 'error' not in g)}/{len(per)} | "
            + ", ".join(_f(g.get("stall_end_s")) for g in per) + " | "
            + ", ".join(_f(g.get("stalls"), "{:.0f}") for g in per) + " | "
            + ", ".join(_f(g.get("self_grown_mib"), "{:.0f}") for g in per) + " | "
            + ", ".join(_f(g.get("self_deflated_ticks")) for g in per) + " |"
        )
    for vrun, per in zip(runs, pers, strict=True):
        v = BY_NAME[vrun["variant"]]
        out.append("")
        out.append(f"## Variant `{v.name}`")
        out.append("")
        out.append(_setup(raw, vrun))
        out.append("")
        out.append("| | " + " | ".join(short(g["name"]) for g in per) + " | median [min, max] |")
        out.append("|---|" + "---:|" * (len(per) + 1))
        for label, key, fmt in COLUMNS:
            vals = [g.get(key) for g in per]
            out.append(f"| {label} | " + " | ".join(_f(x, fmt) for x in vals)
                       + f" | {_spread(vals, fmt)} |")
        out.append("")
        out.append(f"### Verdict, `{v.name}`")
        out.append("")
        out += _verdicts(per, v)
        out.append("")
        out.append(f"### Per guest, `{v.name}`")
        out.append("")
        for g in per:
            if "error" in g:
                out.append(f"- {short(g['name'])}: {g['error']}")
                continue
            traj = " -> ".join(f"{a:.0f} MiB at {t:+.1f} s" for t, a in g["trajectory"])
            ch = "; ".join(f"{c['t_s']:+.1f} s {c['action']} to {c['to_mib']} MiB "
                           f"(`{c['rule']}`, class `{c['class']}`, {c['result']})"
                           for c in g["changes"]) or "none"
            out.append(
                f"- {short(g['name'])} (AT {g['at']} s; ticks before the surge "
                f"{g['ticks_before_surge']}): first deflate "
                + (f"`{g['deflate_rule']}` on class `{g['deflate_class']}`, "
                   f"{g['deflate_from_mib']:.0f} -> {g['deflate_to_mib']:.0f} MiB "
                   f"({g['deflate_reason']})" if g.get("deflate_tick") is not None else "none")
                + f". Surge first read as `{g.get('seen_class', 'n/a')}` via "
                f"{g.get('seen_by', 'n/a')}, report stamped {_f(g.get('seen_age_s'), '{:.2f}')} "
                f"s before the tick (whole seconds: at most that old). "
                + (f"Working set before the first kill at most "
                   f"{g['ws_peak_before_kill_mib']} MiB" if g.get("oom_kills") else
                   f"No OOM kill, working set at most {g['ws_peak_before_kill_mib']} MiB")
                + f"; memload restarts {g['memload_restarts']}; reports every "
                f"{g['report_gap_s']['median']:.1f} s (longest gap "
                f"{g['report_gap_s']['max']:.1f} s); observed until "
                f"{g['observed_until_s']:.0f} s"
                f"{', still stalling at the end' if g['stalling_at_end'] else ''}. Changes: "
                f"{ch}. Balloon (tick readings): {traj}."
            )
        if vrun["run"]["errors"]:
            out.append("")
            out.append(f"Errors during the `{v.name}` run:")
            out.append("")
            out += [f"- {e}" for e in vrun["run"]["errors"]]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------- main


def read_raw(path: Path) -> dict[str, Any]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt") as fh:
            data: dict[str, Any] = json.load(fh)
    else:
        data = json.loads(path.read_text())
    if data.get("format") in OLD_FORMATS:
        wait = data.get("lock_wait_s") or 0.0
        return {"format": FORMAT, "machine": data["machine"], "surge_at_s": data["surge_at_s"],
                "wall_s": data["wall_s"], "lock_wait_s": wait,
                "runs": [{"variant": "plain", "machine": data["machine"],
                          "wall_s": data["wall_s"] - wait, "run": data["run"]}]}
    if data.get("format") != FORMAT:
        raise SystemExit(f"{path}: not a {FORMAT} raw file")
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lab.surge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RESULTS,
                    help="results directory: surge.md there, raw data in raw/surge/")
    ap.add_argument("--variants", default=",".join(v.name for v in VARIANTS),
                    help="which balloon devices to run (the others are kept from the raw file)")
    ap.add_argument("--render-only", type=Path, metavar="RAW",
                    help="only turn a raw file (.json or .json.gz) into surge.md")
    args = ap.parse_args(argv)
    md = args.out / "surge.md"
    if args.render_only:
        md.write_text(render(read_raw(args.render_only)))
        say(f"wrote {md}")
        return 0
    wanted = [w for w in args.variants.split(",") if w]
    unknown = set(wanted) - set(BY_NAME)
    if unknown or not wanted:
        ap.error(f"unknown variant(s) {sorted(unknown)}; choose from {list(BY_NAME)}")
    raw_path = args.out / "raw" / "surge" / "surge.json.gz"
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    kept: list[dict[str, Any]] = []
    if raw_path.exists():
        kept = [r for r in read_raw(raw_path)["runs"] if r["variant"] not in wanted]
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    with lab_lock("surge benchmark"):
        for name in wanted:
            say(f"surge, {name}: booting {len(SURGE_AT_S)} guests, surges at {SURGE_AT_S} s "
                "of uptime")
            t = time.monotonic()
            result = run(BY_NAME[name])
            runs.append({"variant": name, "machine": machine(),
                         "wall_s": time.monotonic() - t, "run": result})
    order = [v.name for v in VARIANTS]
    raw = {"format": FORMAT, "machine": machine(), "surge_at_s": list(SURGE_AT_S),
           "wall_s": time.monotonic() - started, "lock_wait_s": lock.waited_s,
           "runs": sorted(kept + runs, key=lambda r: order.index(r["variant"]))}
    with gzip.open(raw_path, "wt") as fh:
        json.dump(raw, fh)
    text = render(raw)
    md.write_text(text)
    print(text)
    say(f"wrote {md}; raw data {raw_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
