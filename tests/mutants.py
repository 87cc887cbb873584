"""Mutation check of the pure core: break one rule or clamp at a time, the tests must notice.

Each mutant is a named textual change of one file under ``autoballoon/core/`` (the rule
removed from ``RULES``, a clamp switched off, a condition inverted). For each, the tree is
copied to a temporary directory, the change is applied there (it must match exactly once, so a
refactoring of the core shows up here as an error, not as a silent pass), and the non-lab unit
and plumbing tests run against the copy. A mutant is *killed* when a test fails; the first
failing test is recorded. A *survivor* is a break no test notices: either a missing test, or a
change that does not alter behaviour (then ``ACCEPTED`` says why).

Run with ``make check-mutants`` (not part of ``make test``: it runs the suite once per mutant).
``--out FILE`` writes the result as Markdown with the date and the commit tested.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
DECIDE = "autoballoon/core/decide.py"
ONDEMAND = "autoballoon/core/ondemand.py"
STATE = "autoballoon/core/state.py"
CLASSIFY = "autoballoon/core/classify.py"
POLICY = "autoballoon/core/policy.py"
RATES = "autoballoon/core/rates.py"
TESTS = ("tests/unit", "tests/plumbing")
TIMEOUT_S = 900.0


class Mutant(NamedTuple):
    name: str
    path: str
    old: str
    new: str
    what: str


def _drop_rule(rule: str) -> Mutant:
    return Mutant(
        f"rule {rule.replace('_', '-')} removed",
        DECIDE,
        f"\n    {rule},\n",
        "\n",
        f"`{rule}` taken out of `RULES`",
    )


RULE_NAMES = (
    "opted_out",
    "self_deflated",
    "rescue",
    "below_floor",
    "stalled_inflation",
    "stale",
    "unknown",
    "low_water",
    "under_pressure",
    "startup",
    "waiting",
    "observe_mode",
    "above_max",
)

MUTANTS: tuple[Mutant, ...] = (
    *(_drop_rule(r) for r in RULE_NAMES),
    # the last rule and the sharing pass
    Mutant(
        "spare never offers",
        DECIDE,
        "    return Offer(amount, limit)\n",
        "    return Hold('none: nothing offered')\n",
        "`spare` holds instead of offering",
    ),
    Mutant(
        "on-demand takes without a shortfall",
        ONDEMAND,
        "        elif short < tol:\n",
        "        elif False:\n",
        "`host-above-reserve` removed",
    ),
    Mutant(
        "on-demand ignores what was asked",
        ONDEMAND,
        "        if gs.ask.kib:\n            reason = ",
        "        if False:\n            reason = ",
        "`asked` removed",
    ),
    Mutant(
        "on-demand asks unproductive guests again",
        ONDEMAND,
        "        elif _unproductive(gs, samples[name], p):\n",
        "        elif False:\n",
        "`unproductive` removed",
    ),
    Mutant(
        "on-demand ignores covered shortfall",
        ONDEMAND,
        "        elif short - outstanding - asked < tol:\n",
        "        elif False:\n",
        "`host-covered` removed",
    ),
    Mutant(
        "on-demand takes every offer in full",
        ONDEMAND,
        "            amount = min(prop.spare_kib, need)\n",
        "            amount = prop.spare_kib\n",
        "the host's shortfall no longer caps a take",
    ),
    # clamps
    Mutant(
        "no floor clamp",
        DECIDE,
        "    if target < lo:\n        target, clamped = lo, \"floor\"\n",
        "",
        "`_settle` no longer clamps to the floor",
    ),
    Mutant(
        "no max clamp",
        DECIDE,
        "    if target > f.top:\n        target, clamped = f.top, \"max\"\n",
        "",
        "`_settle` no longer clamps to the maximum",
    ),
    Mutant(
        "no floor limit on spare",
        DECIDE,
        '        "stuck-floor" if floor > lo else "floor": cur - floor,\n',
        "",
        "`spare` may offer below the floor (or a stuck floor)",
    ),
    Mutant(
        "no headroom limit on spare",
        DECIDE,
        "        None: f.available - headroom,\n",
        "",
        "`spare` offers without keeping the headroom",
    ),
    Mutant(
        "headroom inverted",
        DECIDE,
        "        None: f.available - headroom,\n",
        "        None: f.available + headroom,\n",
        "`spare` counts the headroom as spare",
    ),
    Mutant(
        "no inflate step cap",
        DECIDE,
        '        "step": int(f.p.inflate_step_ratio * f.hi) * step_growth(gs),\n',
        "",
        "`spare` offers more than `inflate_step_ratio` at once",
    ),
    Mutant(
        "no min change in settle",
        DECIDE,
        "if target == cur or (abs(target - cur) < f.tol and not want.rescue):",
        "if target == cur:",
        "changes under `min_change_mib` are made",
    ),
    Mutant(
        "no min change in spare",
        DECIDE,
        "    if amount < f.tol:\n",
        "    if amount <= 0:\n",
        "offers under `min_change_mib` are made",
    ),
    Mutant(
        "deflate steps swapped",
        DECIDE,
        'ratio = self.p.deflate_large_ratio if kind == "large" else self.p.deflate_medium_ratio',
        'ratio = self.p.deflate_medium_ratio if kind == "large" else self.p.deflate_large_ratio',
        "large and medium deflate steps swapped",
    ),
    Mutant(
        "deflate step ignores the ratio",
        DECIDE,
        "        return max(int(ratio * self.hi), self.tol)\n",
        "        return self.tol\n",
        "every deflate step is `min_change_mib`",
    ),
    # special cases and conditions inside rules
    Mutant(
        "kswapd echo off",
        DECIDE,
        "            c.klass is PressureClass.KSWAPD_RECLAIM\n            or (\n",
        "            False\n            or (\n",
        "kswapd-reclaim after our inflation holds like any pressure",
    ),
    Mutant(
        "echo after any change",
        DECIDE,
        "        gs.change.dir < 0\n        and gs.change.t is not None\n",
        "        gs.change.dir != 0\n        and gs.change.t is not None\n",
        "the echo also follows our deflations",
    ),
    Mutant(
        "cgroup-stall rescue off",
        DECIDE,
        "        and f.c.klass is PressureClass.CGROUP_STALL\n",
        "        and False\n",
        "a stall we caused by inflating holds instead of giving back",
    ),
    Mutant(
        "under-pressure inverted",
        DECIDE,
        "    if f.c.klass in CALM_CLASSES or (f.echo and",
        "    if f.c.klass not in CALM_CLASSES or (f.echo and",
        "`under_pressure` holds the calm classes and passes the others",
    ),
    Mutant(
        "evidence counted again after our change",
        DECIDE,
        "        since_t=gs.change.t,\n",
        "        since_t=None,\n",
        "evidence before our own change is counted again",
    ),
    Mutant(
        "low water ignores reports",
        DECIDE,
        "    if f.available >= low or not f.reported_since_change:\n",
        "    if f.available >= low:\n",
        "low water acts on figures from before our change",
    ),
    Mutant(
        "startup takes used memory",
        DECIDE,
        "    target = max(start, f.cur - free + f.p.headroom_kib(f.cur))\n",
        "    target = start\n",
        "the startup size taken whatever the guest uses",
    ),
    Mutant(
        "startup repeats",
        DECIDE,
        "            or f.gs.change.t is not None\n",
        "            or False\n",
        "the startup size applied again after our own changes",
    ),
    Mutant(
        "startup in observe mode",
        DECIDE,
        '            or f.external or f.p.mode == "observe"):\n',
        "            or f.external):\n",
        "the startup size applied in observe mode",
    ),
    Mutant(
        "startup over an operator",
        DECIDE,
        '            or f.external or f.p.mode == "observe"):\n',
        '            or f.p.mode == "observe"):\n',
        "the startup size applied to a guest an operator just resized",
    ),
    Mutant(
        "waiting ignores stable_s",
        DECIDE,
        " if calm_s < p.stable_s else []\n",
        " if False else []\n",
        "inflation without a calm period",
    ),
    Mutant(
        "waiting ignores cooldown",
        DECIDE,
        "    if f.since_change is not None and f.since_change < p.cooldown_s:\n        blockers",
        "    if False:\n        blockers",
        "inflation inside the cooldown",
    ),
    Mutant(
        "waiting ignores the rescue block",
        DECIDE,
        '    if "rescue" in held:\n',
        "    if False:\n",
        "inflation right after a rescue",
    ),
    Mutant(
        "cgroup-oom counted as calm for any kill",
        CLASSIFY,
        "        if stalls == 0 and lowest_available_kib >= low_water:\n",
        "        if stalls == 0:\n",
        "a kill without a stall is cgroup-oom even with the guest under low water",
    ),
    Mutant(
        "running-out and cgroup-stall swapped",
        CLASSIFY,
        "        if available < headroom:\n",
        "        if available >= headroom:\n",
        "the headroom test of the stall rows inverted",
    ),
    Mutant(
        "calm classes include light-pressure",
        CLASSIFY,
        "CALM_CLASSES = frozenset({PressureClass.NONE, PressureClass.CGROUP_OOM})",
        "CALM_CLASSES = frozenset({PressureClass.NONE, PressureClass.CGROUP_OOM,"
        " PressureClass.LIGHT_PRESSURE})",
        "a guest in light pressure may be inflated",
    ),
    Mutant(
        "stale statistics trusted",
        CLASSIFY,
        "    if age > stale_after_s(policy, history):\n",
        "    if False:\n",
        "stale statistics are classified as fresh",
    ),
    Mutant(
        "floor ratio ignored",
        POLICY,
        "max(self.floor_mib * KIB_PER_MIB, int(self.floor_ratio * top))",
        "self.floor_mib * KIB_PER_MIB",
        "the floor is `floor_mib` only",
    ),
    Mutant(
        "policy max ignored",
        POLICY,
        "            else min(domain_max_kib, self.max_mib * KIB_PER_MIB)\n",
        "            else domain_max_kib\n",
        "`max_mib` no longer caps the guest",
    ),
    Mutant(
        "headroom ratio ignored",
        POLICY,
        "max(self.headroom_mib * KIB_PER_MIB, int(self.headroom_ratio * current_kib))",
        "self.headroom_mib * KIB_PER_MIB",
        "the headroom is `headroom_mib` only",
    ),
    # the rules and limits added since: give-back, shortage-taken, peak-need, the echo,
    # self-deflation against an operator's resize, above-max, rates across reports
    Mutant(
        "give-back removed",
        ONDEMAND,
        "SHORTAGE_OVER_S and host is not None:\n        # With",
        "SHORTAGE_OVER_S and host is not None and False:\n        # With",
        "what on-demand took is never given back",
    ),
    Mutant(
        "give-back ignores the band",
        ONDEMAND,
        "    band = int(GIVE_BACK_BAND_RATIO * host.mem_total_kib) if host is not None else 0\n",
        "    band = 0\n",
        "giving back uses all the host has above its reserve",
    ),
    Mutant(
        "give-back all at once",
        ONDEMAND,
        "amount = min(gs.taken_for_host_kib, step_kib, d.max_kib - d.current_kib, room_kib)",
        "amount = min(gs.taken_for_host_kib, d.max_kib - d.current_kib, room_kib)",
        "a give-back is not limited to one step",
    ),
    Mutant(
        "give-back ignores the cooldown",
        ONDEMAND,
        "        if gs.change.t is not None and now - gs.change.t < p.cooldown_s:\n"
        "            continue\n",
        "",
        "gives back inside the cooldown after a change",
    ),
    Mutant(
        "give-back ignores an operator's hold",
        ONDEMAND,
        '        if "external" in active_holds(gs.holds, p, now):\n'
        "            continue  # an operator's size is left alone, this way too\n",
        "",
        "gives back during `external_hold_s`",
    ),
    Mutant(
        "give-back ignores the mode",
        ONDEMAND,
        '        if p.mode != "on-demand" or not p.enabled:\n            continue\n',
        "",
        "gives back to a guest opted out (or no longer on-demand)",
    ),
    Mutant(
        "give-back owes what a deflate returned",
        DECIDE,
        "        taken_for_host_kib=max(gs.taken_for_host_kib - max(target - cur, 0), 0),\n",
        "",
        "a deflate of ours does not count against what was taken",
    ),
    Mutant(
        "give-back owes what others returned",
        DECIDE,
        "        if cur > prev_kib and not toward_ours and gs.taken_for_host_kib:\n",
        "        if False:\n",
        "growth by the guest or an operator does not count against what was taken",
    ),
    Mutant(
        "shortage-taken removed",
        ONDEMAND,
        "    need = min(short, peak - so_far) - outstanding\n",
        "    need = short - outstanding\n",
        "over one shortage, guests are asked again for what others took",
    ),
    Mutant(
        "shortage-taken counts nothing given",
        ONDEMAND,
        "            so_far += int((pr.state.host_yield_ratio or 0) * was.ask.kib)\n",
        "            so_far += 0\n",
        "what guests gave back is not counted against the shortage",
    ),
    Mutant(
        "shortage never over",
        ONDEMAND,
        "        peak, so_far = max(short, 0), 0\n",
        "",
        "a new shortage inherits the last one's peak and what was given",
    ),
    # the host's fit (take-fit) and the growing step
    Mutant(
        "fit removed",
        ONDEMAND,
        "    fitted = _fit(proposals, samples, resolved, now, over, growth, -short)"
        " if over > 0 else 0\n",
        "    fitted = 0\n",
        "on-demand never takes free memory for the host's fit",
    ),
    Mutant(
        "fit not shared in proportion",
        ONDEMAND,
        "            amount = min(prop.fit_kib, left, -(-prop.fit_kib * share_of // total))\n",
        "            amount = min(prop.fit_kib, left)\n",
        "the first guest of a priority gives all it can",
    ),
    Mutant(
        "fit ignores priority",
        ONDEMAND,
        "            by_priority.setdefault(resolved[n].priority, []).append((n, pr))\n",
        "            by_priority.setdefault(0, []).append((n, pr))\n",
        "every guest gives for the fit alike",
    ),
    Mutant(
        "fit counts an unreported take twice",
        DECIDE,
        "            free -= max(then[-1] - gs.last_target_kib, 0)\n",
        "            free -= 0\n",
        "a guest's free memory is counted again before it reports our take",
    ),
    Mutant(
        "fit takes a guest under pressure",
        DECIDE,
        'FIT_RULES = frozenset({"waiting", "spare"})\n',
        'FIT_RULES = frozenset({"waiting", "spare", "under-pressure"})\n',
        "the fit takes from a guest held in a pressure class",
    ),
    Mutant(
        "fit ignores the cooldown",
        DECIDE,
        "    if _held_back(f):\n        return 0\n",
        "",
        "the fit takes again inside the cooldown (or a hold, or before a report)",
    ),
    Mutant(
        "fit takes crumbs",
        DECIDE,
        "    return amount if amount >= max(f.tol, step) else 0\n",
        "    return amount if amount >= f.tol else 0\n",
        "the fit takes free memory under one step (the kernel's own reserve)",
    ),
    Mutant(
        "give-back ignores the guests' growth",
        ONDEMAND,
        "-over - band if fit_on else -short - band",
        "-short - band",
        "gives back what the guests' free memory would take again",
    ),
    Mutant(
        "step never grows",
        STATE,
        "    return min(1 + calm_takes(gs), STEP_GROWTH_MAX)\n",
        "    return 1\n",
        "every inflation is one base step",
    ),
    Mutant(
        "step grows without bound",
        STATE,
        "    return min(1 + calm_takes(gs), STEP_GROWTH_MAX)\n",
        "    return 1 + calm_takes(gs)\n",
        "no cap on the step's growth",
    ),
    Mutant(
        "a stall does not reset the step",
        DECIDE,
        "        gs = gs._replace(calm_takes=0)\n",
        "        pass\n",
        "the echo's stalls keep the grown step",
    ),
    Mutant(
        "no peak-need limit on spare",
        DECIDE,
        '        "peak-need": cur - peak_need_kib(gs) - headroom,\n',
        "",
        "`spare` may take below the recent peak need",
    ),
    Mutant(
        "peak-need without headroom",
        DECIDE,
        '        "peak-need": cur - peak_need_kib(gs) - headroom,\n',
        '        "peak-need": cur - peak_need_kib(gs),\n',
        "`spare` may take down to the peak need itself",
    ),
    Mutant(
        "peak need never forgotten",
        STATE,
        "    kept = tuple(pk for pk in peaks if pk[0] > now - NEED_WINDOW_S)\n",
        "    kept = peaks\n",
        "peaks older than `NEED_WINDOW_S` still limit `spare`",
    ),
    Mutant(
        "peak need keeps a slot's first reading",
        STATE,
        "        return peaks if used_kib <= peaks[-1][1] else (*peaks[:-1], (slot, used_kib))\n",
        "        return peaks\n",
        "a higher use later in the same slot is not remembered",
    ),
    Mutant(
        "peak need kept across a reboot",
        DECIDE,
        "        gs = gs._replace(stuck_floor_kib=None, holds=unstuck, need_peaks=())\n",
        "        gs = gs._replace(stuck_floor_kib=None, holds=unstuck)\n",
        "the need before a reboot still limits `spare`",
    ),
    Mutant(
        "rescue does not wait for a report",
        DECIDE,
        "    if f.gs.change.dir > 0 and not f.reported_since_change:\n",
        "    if False:\n",
        "a rescue answers again a report made before our deflate",
    ),
    Mutant(
        "rescue ignores the echo",
        DECIDE,
        "    if f.echo:\n        return None\n    kind = RESCUE_CLASSES",
        "    kind = RESCUE_CLASSES",
        "the echo of our inflation is rescued",
    ),
    Mutant(
        "echo classes off",
        DECIDE,
        "                c.klass in ECHO_CLASSES\n",
        "                False\n",
        "only kswapd-reclaim is an echo",
    ),
    Mutant(
        "echo at any availability",
        DECIDE,
        "                and (available_kib or 0) >= 2 * p.headroom_kib(cur)\n",
        "",
        "an echo class is an echo even near the headroom",
    ),
    Mutant(
        "echo at any time",
        DECIDE,
        "        and now - gs.change.t <= p.cooldown_s + p.rate_window_s\n",
        "",
        "the echo window after our inflation never ends",
    ),
    Mutant(
        "echo restarts the calm time",
        DECIDE,
        "    if c.klass in CALM_CLASSES or echo:\n",
        "    if c.klass in CALM_CLASSES:\n",
        "an echo resets the calm time like any pressure",
    ),
    Mutant(
        "kswapd echo holds",
        DECIDE,
        "    if f.c.klass in CALM_CLASSES or (f.echo and f.c.klass is PressureClass.KSWAPD_RECLAIM)"
        ":",
        "    if f.c.klass in CALM_CLASSES:",
        "kswapd-reclaim after our inflation holds (without restarting the calm time)",
    ),
    Mutant(
        "cgroup-stall rescue at any availability",
        DECIDE,
        "        and f.available < 2 * f.p.headroom_kib(f.cur)\n",
        "",
        "a stall after our inflation is rescued far above the headroom",
    ),
    Mutant(
        "above-max in one change",
        DECIDE,
        "    return Change(f.cur - min(want.spare_kib, f.cur - f.hi),",
        "    return Change(f.hi,",
        "a guest above a lowered maximum is brought down to it at once",
    ),
    Mutant(
        "rescue capped at the policy maximum",
        DECIDE,
        "        return self.hi if self.cur <= self.hi else max(self.cur, self.sample.max_kib)\n",
        "        return self.hi\n",
        "above a lowered maximum, a rescue clamps the guest down to it",
    ),
    Mutant(
        "hot-plug read as self-deflation",
        DECIDE,
        "    if after.max_kib != before.max_kib:\n        return False\n",
        "",
        "growth with a new domain maximum is taken as the guest's own",
    ),
    Mutant(
        "free growth read as self-deflation",
        DECIDE,
        "    return stalled or 2 * used_grew >= after.actual_kib - before.actual_kib\n",
        "    return True\n",
        "growth that arrives as free memory is taken as the guest's own",
    ),
    Mutant(
        "no self-deflation at all",
        DECIDE,
        "            and _needed(history[-2], sample)\n",
        "            and False\n",
        "a guest's deflate-on-OOM is read as an operator's resize",
    ),
    Mutant(
        "history not kept across reports",
        DECIDE,
        "    if older > 1 and kept[0].last_update == sample.last_update:\n",
        "    if False:\n",
        "the history drops the report before the newest when the window is shorter",
    ),
    Mutant(
        "baseline within one report",
        RATES,
        "        if sample.t <= cutoff_t and sample.last_update != report:\n",
        "        if sample.t <= cutoff_t:\n",
        "rates measured between two readings of one report",
    ),
    Mutant(
        "rates over reading times",
        RATES,
        "    span = float(new.last_update - old.last_update)\n",
        "    span = 0.0\n",
        "the span of a rate is the readings', not the reports'",
    ),
    Mutant(
        "report period not inferred",
        CLASSIFY,
        "        period = float(min(steps)) if steps else None\n",
        "        period = None\n",
        "without a known period, staleness ignores the guest's own reporting period",
    ),
    Mutant(
        "no-counters oom off",
        CLASSIFY,
        "        drop >= max(headroom, _used_kib(peak) // 4)\n        and near < headroom\n",
        "        False\n        and near < headroom\n",
        "a collapse of used memory is not read as a kill",
    ),
    Mutant(
        "no-counters oom on a guest with the counters",
        CLASSIFY,
        "        and not any(s.has_extended for s in window)\n",
        "",
        "a rebooting guest that has the counters reads its used memory's collapse as a kill",
    ),
    Mutant(
        "no-counters oom from any height",
        CLASSIFY,
        "        drop >= max(headroom, _used_kib(peak) // 4)\n        and near < headroom\n",
        "        drop >= max(headroom, _used_kib(peak) // 4)\n        and True\n",
        "a collapse of used memory is a kill even far above the headroom",
    ),
    Mutant(
        "no-counters fault burst calm",
        CLASSIFY,
        "    if majflt >= p.major_faults_high_per_s and majflt > 0 and available < 2 * headroom:\n",
        "    if False:\n",
        "a storm of major faults near the headroom reads as none",
    ),
    Mutant(
        "no-counters swap-in calm",
        CLASSIFY,
        "    if swap_in > 0:\n        return c(PressureClass.LIGHT_PRESSURE",
        "    if False:\n        return c(PressureClass.LIGHT_PRESSURE",
        "a little swap-in reads as none",
    ),
)

ACCEPTED: dict[str, str] = {}
"""Survivors that do not change behaviour, with why (none so far)."""


class Result(NamedTuple):
    mutant: Mutant
    outcome: str  # killed / survived / error
    detail: str
    seconds: float


def _snapshot(dest: Path) -> None:
    """The repository's files as they are now (tracked and new, not ignored ones), once: edits
    made while the check runs do not leak into later mutants."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _apply(dest: Path, m: Mutant) -> None:
    path = dest / m.path
    text = path.read_text()
    if not m.old:
        return
    count = text.count(m.old)
    if count != 1:
        raise ValueError(f"{m.name}: expected the text once in {m.path}, found it {count} times")
    path.write_text(text.replace(m.old, m.new))


def run_one(m: Mutant, python: str, snapshot: Path, tests: tuple[str, ...] = TESTS) -> Result:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ab-mutant-") as tmp:
        dest = Path(tmp) / "tree"
        shutil.copytree(snapshot, dest)
        try:
            _apply(dest, m)
        except ValueError as err:
            return Result(m, "error", str(err), 0.0)
        env = dict(os.environ, PYTHONPATH=str(dest), PYTHONDONTWRITEBYTECODE="1")
        probe = subprocess.run(
            [python, "-c", "import autoballoon; print(autoballoon.__file__)"],
            cwd=dest, env=env, capture_output=True, text=True, check=False,
        )
        if not probe.stdout.startswith(str(dest)):
            return Result(m, "error", f"the copy is not imported: {probe.stdout.strip()}", 0.0)
        cmd = [python, "-m", "pytest", "-m", "not lab", "-x", "-q", "-rf",
               "-p", "no:cacheprovider", *tests]
        try:
            proc = subprocess.run(
                cmd, cwd=dest, env=env, capture_output=True, text=True,
                timeout=TIMEOUT_S, check=False,
            )
        except subprocess.TimeoutExpired:
            return Result(m, "killed", f"timeout after {TIMEOUT_S:.0f} s", TIMEOUT_S)
        elapsed = time.monotonic() - start
        if proc.returncode == 0:
            return Result(m, "survived", "", elapsed)
        failed = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", proc.stdout, re.M)
        if proc.returncode in (1,) and failed:
            return Result(m, "killed", failed[0], elapsed)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return Result(m, "error", f"pytest exit {proc.returncode}: {' | '.join(tail)}", elapsed)


def _commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "autoballoon", "tests"],
        capture_output=True, text=True, check=False,
    )
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def render(results: list[Result], commit: str, when: str) -> str:
    killed = sum(r.outcome == "killed" for r in results)
    survived = [r for r in results if r.outcome == "survived"]
    errors = [r for r in results if r.outcome == "error"]
    lines = [
        "# Mutation check of autoballoon/core",
        "",
        f"Run {when} on commit {commit} with `make check-mutants` (`tests/mutants.py`): each "
        "mutant is one rule or clamp removed or inverted in a copy of the tree, then "
        f"`pytest -m \"not lab\" -x {' '.join(TESTS)}` on the copy.",
        "",
        f"**{killed} killed, {len(survived)} survived, {len(errors)} errors** "
        f"of {len(results)} mutants.",
        "",
        "| mutant | file | change | outcome | first failing test | s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r.mutant
        lines.append(
            f"| {m.name} | `{m.path.removeprefix('autoballoon/core/')}` | {m.what} | "
            f"{r.outcome} | {r.detail.replace('|', '/')} | {r.seconds:.0f} |"
        )
    if survived:
        lines += ["", "## Survivors", ""]
        for r in survived:
            why = ACCEPTED.get(r.mutant.name, "not explained: a test is missing")
            lines.append(f"- {r.mutant.name}: {why}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="write the result as Markdown here")
    ap.add_argument("--baseline", action="store_true", help="run the unchanged copy only")
    ap.add_argument("-k", dest="only", help="only mutants whose name contains this")
    ap.add_argument("--tests", nargs="+", default=list(TESTS), help="test paths to run")
    args = ap.parse_args(argv)
    baseline = Mutant("none (the tree as it is)", DECIDE, "", "", "nothing changed")
    chosen = [m for m in MUTANTS if not args.only or args.only in m.name]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = _commit()
    results = []
    with tempfile.TemporaryDirectory(prefix="ab-mutants-") as tmp:
        snapshot = Path(tmp)
        _snapshot(snapshot)
        # The unchanged tree first: a mutant is only killed if the tests pass without it.
        first = run_one(baseline, sys.executable, snapshot, tuple(args.tests))
        ok = first.outcome == "survived"
        print(f"unchanged tree: {'tests pass' if ok else 'FAILS ' + first.detail}", flush=True)
        if not ok or args.baseline:
            return 0 if ok else 2
        for m in chosen:
            r = run_one(m, sys.executable, snapshot, tuple(args.tests))
            print(f"{r.outcome:8} {r.seconds:5.0f}s  {m.name}  {r.detail}", flush=True)
            results.append(r)
    text = render(results, commit, when)
    if args.out:
        args.out.write_text(text)
    unexplained = [
        r for r in results
        if r.outcome == "error" or (r.outcome == "survived" and r.mutant.name not in ACCEPTED)
    ]
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
