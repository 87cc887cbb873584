"""Decide: from this tick's samples and each guest's state, a balloon target per guest.

Purely computational, no side effects: ``step(now, host, samples, state, policies)`` returns the
decisions (values) and the next state. The daemon applies the decisions through an actuator;
dry-run swaps the actuator; replay feeds recorded samples. All three run this exact function.
The values it returns and keeps (``Decision``, ``GuestState``, ``EngineState``) are defined in
``autoballoon.core.state`` and importable from here.

Each guest's tick has two halves. The bookkeeping (``_observe``) records the sample in the
guest's history (restarting it at a reboot), classifies, and notices what the balloon itself
says: a size changed by someone else, an inflation the guest does not follow. The law then
reads those facts and nothing else: an ordered list of rules (``RULES``), each a small function
that proposes (hold, change, or offer spare memory) or declines; the first proposal wins and the
decision names its rule. Sizes are in KiB; "inflate" takes memory from the guest, "deflate"
gives it back. A guest whose sample cannot be used at all is left alone for the tick before
any of this: sizes that make no sense (``bad-sizes``), a reading older than its last one
(``out-of-order``), a policy that cannot be resolved (``policy-error``).

Rescue first:

- ``opted-out``: ``enabled = false`` is observed and reported, never resized.
- ``self-deflated`` (closed loop only): a guest with deflate-on-OOM (``autodeflate='on'``) whose
  balloon grew past our last target, its used memory growing with it (or its allocations
  stalling), took those pages back itself, before its OOM killer ran. Growth that arrives as
  free memory, or with a new domain maximum (a hot-plug), is an operator's resize, held for
  ``external_hold_s`` as on any guest. For a guest in trouble, its new size becomes our target
  (it is never pushed back), inflation is blocked for ``pressure_block_s`` and, for that long, never
  goes below the size it deflated to (the stuck floor below). If the guest is still in a rescue
  class or under low water, that rescue is made at once; otherwise it holds.
- ``rescue``: ``oom``, ``running-out`` and ``thrashing`` deflate at once by the large step,
  ``global-reclaim`` by the medium step, and so does ``cgroup-stall`` on a guest whose last
  change was our inflation and whose available memory is under twice its headroom (that
  "available" memory is cache it re-reads), ignoring
  cooldowns: the evidence is measured only since our own last change, and after our deflate
  only once the guest has sent a report made after it (as low water does: a report made
  before the deflate landed still carries the event it answered), so one event is answered
  once. ``cgroup-oom`` (a kill inside a memory
  cgroup, the guest calm) is no rescue: the guest's memory would not help the cgroup.
- ``below-floor``: a balloon below the policy's floor goes back up to it.
- ``stalled-inflation`` (closed loop only): an inflation the balloon has not followed for
  ``stuck_after_s`` is backed off by the medium step and not retried below that size for
  ``pressure_block_s``.
- ``stale``: statistics gone stale (older than ``stale_after_s``, or than the guest's own
  reporting period plus a tick when that is longer; the period is inferred from its reports
  when the reader does not know it) on a guest we hold below its maximum give
  back a medium step (a guest too busy to report may be thrashing); ``unknown``: otherwise
  nothing is done.
- ``low-water``: available memory under the low-water mark deflates by the medium step once the
  guest has reported since our last change.

Hold under pressure:

- ``under-pressure``: any other pressure class holds (``cgroup-stall``: stalls while memory is
  available, which more memory would not cure; a struggling kswapd means nothing is spare).
  ``kswapd-reclaim`` within ``cooldown_s + rate_window_s`` of our own inflation does not hold
  and does not reset the calm time: it is the guest reclaiming the cache we took. So too
  ``global-reclaim``, ``cgroup-stall`` and ``light-pressure`` in that window with at least
  twice the headroom still available (the balloon driver's allocations reclaiming cold cache
  count as alloc stalls, ``echo``): no rescue, no restart of the calm time, but a hold until
  they end.
  ``cgroup-oom`` is calm for the guest as a whole: it neither holds nor resets the calm time.

Take slowly:

- ``startup``: a guest with a startup size (``startup_mib``/``startup_ratio``) that we have not
  resized yet, first seen calm, is brought down to it at once, taking only memory that is free
  in it beyond the headroom: a guest booting (its page cache not filled yet) goes to its
  startup size and grows from there on demand; a warm one keeps what it uses.
- ``waiting``: a guest is an inflation candidate only in a calm class (``none``, ``cgroup-oom``)
  held for ``stable_s``,
  outside the cooldown after any change, outside ``pressure_block_s`` after a rescue, outside an
  operator's hold (``external_hold_s``), outside ``pressure_block_s`` after the guest deflated
  itself, and once it has reported since our last change. Those holds are data in the guest's
  state (``GuestState.holds``, by reason: ``rescue``, ``self-deflated``, ``external``, and the
  ``stuck-floor`` no offer goes below), and one helper (``state.active_holds``) says
  which are in force at ``now``; the cooldown and the calm time are read from the last change
  and the calm class.
- ``observe-mode``: the ``observe`` mode never acts. ``above-max``: a guest above its maximum
  (a ``max_mib`` lowered under it) comes down no faster than ``spare`` would take from it
  (headroom, step, floor, once calm), whatever the host needs; until it is down, its rescues
  may give back up to the domain's own maximum, as for any guest.
- ``spare``: available memory above the headroom, at most ``inflate_step_ratio`` of the maximum
  and never below the floor (or a learned stuck floor), nor below the most the guest used (its
  size less available) within ``NEED_WINDOW_S`` plus the headroom (a working set that comes
  back every few minutes finds its memory there), is offered. Then, over all guests (the pass
  in ``autoballoon.core.ondemand``, which ``step`` calls after every guest's rules):
  ``proactive`` takes every offer (``take-proactive``); ``on-demand`` takes only what brings the
  host back to its reserve (``take-on-demand``), nothing while the host is fine
  (``host-above-reserve``) or while what was already asked covers its shortfall
  (``host-covered``, ``asked``). It asks lowest priority first, then guests whose takes the host
  really got back, then most spare; a guest whose last take returned (almost) nothing to the
  host, by its QEMU RSS and by the host's MemAvailable alike, is not asked again during this
  shortage (``unproductive``): not until the host has stayed above its reserve for
  ``SHORTAGE_OVER_S``, or the guest has touched more memory. Over one shortage, what guests
  gave back (as judged) and what is still on its way never exceed its largest shortfall: what
  something else on the host takes again is not asked of guests a second time
  (``shortage-taken``). When ballooning cannot help the host, the engine says so
  (``EngineState.host_verdict``). Once the shortage is over, what on-demand took goes back
  (``give-back``): a step per guest per cooldown at most, highest priority first, and only
  while the host stays ``GIVE_BACK_BAND_RATIO`` of its total above its reserve (the band is the
  hysteresis: giving back cannot start a shortage of its own).
  Before a shortage, the fit (``take-fit``, with ``[host] fit``, on by default): what the
  guests could still grow into (their free memory, less our inflations they have not reported
  yet) must fit in what the host can give above its reserve. When it does not, the excess is
  taken from the free memory of calm on-demand guests at once (no step, no calm time: pages
  never touched cost the guest nothing now, and a database warming its cache would fill them
  faster than any take after the fact), lowest priority first and within a priority in
  proportion to what each can give, within the headroom, floor and recent peak need of
  ``spare``. What it took goes back as ``give-back`` does, once the host has room beyond the
  guests' growth. The host's verdict (``state.HostVerdict``) is a typed value: a kind
  (``state.Verdict``) and its figures.

Finally every change is clamped into [floor, max] (for a guest still above a lowered maximum,
[floor, the domain's maximum]: see ``above-max``) and changes under ``min_change_mib`` are
skipped (except rescues); ``observe`` turns a change into a hold that says what it would do.
The dead band between low-water and headroom is where nothing happens; that and the cooldowns
are why a constant input settles and stays put.

With ``open_loop=True`` (dry-run, replay) the balloon never follows the decisions, so the
closed-loop detectors are off: a stalled inflation, a size changed by someone else, and a guest
that deflated itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from autoballoon.core.classify import (
    CALM_CLASSES,
    Basis,
    Classification,
    PressureClass,
    classify,
    stale_after_s,
)
from autoballoon.core.ondemand import judge_ask, share
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.rates import counters_reset
from autoballoon.core.samples import (
    STAT_ALLOC_STALLS,
    GuestSample,
    HostSample,
    size_problem,
    wall_time,
)
from autoballoon.core.state import (
    NEW_GUEST,
    Action,
    Decision,
    EngineState,
    GuestState,
    Held,
    LastChange,
    Proposed,
    active_holds,
    peak_need_kib,
    remember_need,
    step_growth,
    with_hold,
    without_hold,
)
from autoballoon.core.units import KIB_PER_MIB, mib

__all__ = [  # what other modules import from here, whatever module defines it
    "NOTABLE_HOLDS",
    "RESCUE_CLASSES",
    "RULES",
    "Action",
    "Change",
    "Decision",
    "EngineState",
    "Facts",
    "GuestState",
    "Hold",
    "Offer",
    "step",
]

RESCUE_CLASSES = {
    PressureClass.OOM: "large",
    PressureClass.RUNNING_OUT: "large",
    PressureClass.THRASHING: "large",
    PressureClass.GLOBAL_RECLAIM: "medium",
}

ECHO_CLASSES = frozenset({
    PressureClass.GLOBAL_RECLAIM,
    PressureClass.CGROUP_STALL,
    PressureClass.LIGHT_PRESSURE,
})
"""Reclaim that right after our own inflation, with twice the headroom still available, is the
balloon driver's allocations reclaiming cold cache (``kswapd-reclaim`` is an echo at any
availability)."""

HISTORY_LIMIT = 64
"""Samples kept per guest at most, whatever the window and tick rate (bounds memory)."""

FORGET_AFTER_S = 600.0
"""A guest not seen for this long (domain gone) is dropped from the state."""


# --- what a rule proposes ---------------------------------------------------------------------


class Hold(NamedTuple):
    """Leave the balloon where it is."""

    reason: str


class Change(NamedTuple):
    """Move the balloon to ``target_kib`` (clamped and rounded off later)."""

    target_kib: int
    reason: str
    rescue: bool = False
    """A rescue is made even under ``min_change_mib``, and a deflating one blocks inflation."""
    stuck_floor_kib: int | None = None
    """Do not inflate below this size for ``pressure_block_s`` (a stalled inflation)."""


class Offer(NamedTuple):
    """The guest can give up to ``spare_kib``; how much is taken is decided over all guests."""

    spare_kib: int
    limit: str | None
    """What bounded it: "step", "floor", "stuck-floor", "peak-need" or None (the headroom)."""


Proposal = Hold | Change | Offer


class Facts(NamedTuple):
    """One guest at one tick after the bookkeeping: everything a rule may read."""

    sample: GuestSample
    c: Classification
    p: GuestPolicy
    gs: GuestState
    now: float
    cur: int
    lo: int
    hi: int
    tol: int
    """Changes smaller than this are not worth making (``min_change_mib``, at least 1 MiB)."""
    available_kib: int | None
    """The guest's available memory as reported; None when it reports none."""
    available: int
    """The same, 0 when not reported."""
    since_change: float | None
    reported_since_change: bool
    """The guest has sent statistics since our last change (they reflect it)."""
    external: bool
    """Someone else resized the balloon within ``external_hold_s``."""
    stalled: bool
    """Our last inflation has not been followed for ``stuck_after_s``."""
    self_deflated_from: int | None = None
    """The balloon size before the guest deflated itself this tick (deflate-on-OOM); None
    when it did not."""
    echo: bool = False
    """Within ``cooldown_s + rate_window_s`` of our own inflation, ``kswapd-reclaim``, or a class
    of ``ECHO_CLASSES`` with at least twice the headroom still available: the guest reclaiming
    the cache we asked for. It neither rescues nor restarts the calm time."""

    def step_kib(self, kind: str) -> int:
        ratio = self.p.deflate_large_ratio if kind == "large" else self.p.deflate_medium_ratio
        return max(int(ratio * self.hi), self.tol)

    @property
    def top(self) -> int:
        """The most a rescue gives: the maximum, or, while the balloon is still above it (a
        lowered ``max_mib``), the domain's own maximum: the guest had that memory, and gives
        it up only as ``above-max`` finds it spare."""
        return self.hi if self.cur <= self.hi else max(self.cur, self.sample.max_kib)


# --- the law, in order ------------------------------------------------------------------------


def opted_out(f: Facts) -> Proposal | None:
    return None if f.p.enabled else Hold("opted out (enabled = false)")


def self_deflated(f: Facts) -> Proposal | None:
    if f.self_deflated_from is None:
        return None
    why = (
        f"the guest deflated itself (deflate-on-OOM) from {mib(f.self_deflated_from)} to "
        f"{mib(f.cur)} MiB: taken as its size, not inflated below it for "
        f"{f.p.pressure_block_s:.0f} s"
    )
    more = rescue(f) or low_water(f)
    if isinstance(more, Change):
        return more._replace(reason=f"{why}; {more.reason}")
    return Hold(why)


def rescue(f: Facts) -> Proposal | None:
    if f.echo:
        return None
    kind = RESCUE_CLASSES.get(f.c.klass)
    why = f"{f.c.klass}: {f.c.reason}"
    if (
        kind is None
        and f.c.klass is PressureClass.CGROUP_STALL
        and f.gs.change.dir < 0
        and f.available < 2 * f.p.headroom_kib(f.cur)
    ):
        # Stalls "while memory is available" on a guest we squeezed down to about its headroom:
        # that available memory is page cache it re-reads, so the stalls are ours; give back
        # rather than hold. Far above the headroom our take did not bring it near the edge
        # (a warm database guest stalled once with 391 MiB available): that holds.
        if f.cur >= f.top:
            return None
        return Change(
            f.cur + f.step_kib("medium"),
            f"{why}; on a guest we inflated: giving memory back",
            rescue=True,
        )
    if kind is None:
        return None
    if f.gs.change.dir > 0 and not f.reported_since_change:
        # A report made before our deflate landed still carries the event it answered.
        return Hold(f"{why}; deflated {f.since_change or 0:.0f} s ago: waiting for a report since")
    if f.cur >= f.top:
        return Hold(f"{why}; already at max")
    return Change(f.cur + f.step_kib(kind), why, rescue=True)


def below_floor(f: Facts) -> Proposal | None:
    if f.cur >= f.lo:
        return None
    return Change(f.lo, f"{f.c.klass}: below the floor {mib(f.lo)} MiB")


def stalled_inflation(f: Facts) -> Proposal | None:
    if not f.stalled:
        return None
    wanted = f.gs.last_target_kib or 0
    target = min(f.top, f.cur + f.step_kib("medium"))
    return Change(
        target,
        f"inflation stalled at {mib(f.cur)} MiB (target {mib(wanted)} MiB "
        f"for {f.since_change or 0:.0f} s): the guest cannot give more",
        rescue=True,
        stuck_floor_kib=target,
    )


def stale(f: Facts) -> Proposal | None:
    if f.c.klass is not PressureClass.UNKNOWN:
        return None
    last_update = f.sample.last_update
    if not (last_update > 0 and f.cur < f.hi):
        return None
    if wall_time(f.sample, f.now) - last_update <= stale_after_s(f.p, f.gs.history):
        return None
    if f.since_change is not None and f.since_change < f.p.cooldown_s:
        return None
    return Change(f.cur + f.step_kib("medium"), f"unknown: {f.c.reason}; giving memory back")


def unknown(f: Facts) -> Proposal | None:
    if f.c.klass is not PressureClass.UNKNOWN:
        return None
    return Hold(f"unknown: {f.c.reason}; never inflated")


def low_water(f: Facts) -> Proposal | None:
    low = f.p.low_water_kib(f.cur)
    if f.available >= low or not f.reported_since_change:
        return None
    if f.cur >= f.top:
        return Hold(f"{f.c.klass}: available {mib(f.available)} MiB below low water; at max")
    return Change(
        f.cur + f.step_kib("medium"),
        f"{f.c.klass}: available {mib(f.available)} MiB below low water {mib(low)} MiB",
        rescue=True,
    )


_WHY_HOLD = {
    PressureClass.CGROUP_STALL: "stalls while memory is available; more memory would not help, "
    "so nothing is taken or given",
    PressureClass.RECLAIM_STRUGGLING: "kswapd cannot reclaim: nothing to spare",
}


def under_pressure(f: Facts) -> Proposal | None:
    if f.c.klass in CALM_CLASSES or (f.echo and f.c.klass is PressureClass.KSWAPD_RECLAIM):
        return None
    if f.echo:
        return Hold(
            f"{f.c.klass}: {f.c.reason}; right after our inflation with "
            f"{mib(f.available)} MiB still available: the guest reclaiming the cache we asked "
            "for, no rescue; the next step waits for it to end"
        )
    why = _WHY_HOLD.get(f.c.klass, "not inflated while under pressure")
    return Hold(f"{f.c.klass}: {f.c.reason}; {why}")


def startup(f: Facts) -> Proposal | None:
    start = f.p.startup_kib(f.sample.max_kib)
    free = f.sample.free_kib
    if (start is None or free is None or f.cur <= start
            or f.gs.change.t is not None
            or f.external or f.p.mode == "observe"):
        return None
    # Free memory only, beyond the headroom: a guest already using its memory keeps it.
    target = max(start, f.cur - free + f.p.headroom_kib(f.cur))
    if f.cur - target < f.tol:
        return None
    return Change(
        target,
        f"{f.c.klass}: first seen with {mib(free)} MiB free: brought to its startup size "
        f"{mib(start)} MiB" + ("" if target == start else
                                f" as far as its free memory allows ({mib(target)} MiB)"),
    )


def waiting(f: Facts) -> Proposal | None:
    p, now, gs = f.p, f.now, f.gs
    calm_s = now - (gs.none_since or now)
    blockers = [f"calm for {calm_s:.0f}/{p.stable_s:.0f} s"] if calm_s < p.stable_s else []
    blockers += _held_back(f)
    return Hold("none: " + ", ".join(blockers)) if blockers else None


def _held_back(f: Facts) -> list[str]:
    """What keeps a calm guest from being taken from now, besides its calm time: the cooldown,
    the holds after a rescue or its own deflate, an operator's resize, no report since our
    last change (``waiting`` says them all; the host's fit honours these alone)."""
    p, now, gs = f.p, f.now, f.gs
    blockers = []
    if f.since_change is not None and f.since_change < p.cooldown_s:
        blockers.append(f"cooldown {f.since_change:.0f}/{p.cooldown_s:.0f} s")
    held = active_holds(gs.holds, p, now)
    if "rescue" in held:
        blockers.append(
            f"blocked after rescue {now - held['rescue'].since:.0f}/{p.pressure_block_s:.0f} s"
        )
    if "self-deflated" in held:
        blockers.append(
            f"blocked after the guest deflated itself "
            f"{now - held['self-deflated'].since:.0f}/{p.pressure_block_s:.0f} s"
        )
    if f.external:
        blockers.append("resized by someone else; holding")
    if not f.reported_since_change:
        # Its figures predate our change: the same spare memory would be counted twice.
        blockers.append("no report since the last change")
    return blockers


def observe_mode(f: Facts) -> Proposal | None:
    return Hold("none: observe mode never acts") if f.p.mode == "observe" else None


def above_max(f: Facts) -> Proposal | None:
    if f.cur <= f.hi:
        return None
    # Taken as any spare memory is (headroom, step, floor), whatever the host needs: a maximum
    # lowered under the guest's working set must not squeeze it in one change.
    head = f"none: above max {mib(f.hi)} MiB"
    want = spare(f)
    if not isinstance(want, Offer):
        return Hold(f"{head}, nothing spare to come down by ({want.reason})")
    return Change(f.cur - min(want.spare_kib, f.cur - f.hi), f"{head}, coming down as it spares")


def _spare_limits(f: Facts) -> dict[str | None, int]:
    """What bounds the memory a calm guest can give, by name (None: the headroom)."""
    gs, cur, lo = f.gs, f.cur, f.lo
    headroom = f.p.headroom_kib(cur)
    floor = lo
    if gs.stuck_floor_kib is not None and "stuck-floor" in active_holds(gs.holds, f.p, f.now):
        floor = max(floor, gs.stuck_floor_kib)
    return {
        None: f.available - headroom,
        "stuck-floor" if floor > lo else "floor": cur - floor,
        "step": int(f.p.inflate_step_ratio * f.hi) * step_growth(gs),
        "peak-need": cur - peak_need_kib(gs) - headroom,
    }


def spare(f: Facts) -> Proposal:
    """The last rule: always proposes (an offer, or a hold when there is nothing to give)."""
    limits = _spare_limits(f)
    headroom = f.p.headroom_kib(f.cur)
    limit = min(limits, key=lambda k: limits[k])
    amount = limits[limit]
    if amount < f.tol:
        return Hold(
            f"none: {mib(f.available)} MiB available, headroom {mib(headroom)} MiB"
            + (f", at {limit}" if limit else "")
        )
    return Offer(amount, limit)


Rule = Callable[[Facts], Proposal | None]

NOTABLE_HOLDS = frozenset({"self-deflated"})
"""Holds that report something that happened to the balloon (the guest deflated itself): the
log and the status file show them as they show changes."""

RULES: tuple[Rule, ...] = (
    opted_out,
    self_deflated,
    rescue,
    below_floor,
    stalled_inflation,
    stale,
    unknown,
    low_water,
    under_pressure,
    startup,
    waiting,
    observe_mode,
    above_max,
)
"""The law, in order; the first rule that proposes decides. ``spare`` comes last."""

_NAMED = tuple((r.__name__.replace("_", "-"), r) for r in RULES)


# --- bookkeeping -------------------------------------------------------------------------------


def _append(
    history: tuple[GuestSample, ...], sample: GuestSample, keep_s: float, same: bool
) -> tuple[tuple[GuestSample, ...], bool]:
    """History with ``sample`` added; restarts (and says so) when the guest rebooted.

    ``same``: the sample's statistics equal the newest one's (then no counter went down).
    """
    if history:
        prev = history[-1]
        if sample.t == prev.t:
            history = history[:-1]  # same instant read twice: keep the newer reading
        elif not same and counters_reset(prev, sample):
            return (sample,), True
    horizon = sample.t - keep_s
    # keep one sample older than the horizon: it is the baseline of the window's rates.
    older = 0
    for s in history:
        if s.t >= horizon:
            break
        older += 1
    kept = history[older - 1 :] if older > 1 else history
    if older > 1 and kept[0].last_update == sample.last_update:
        # and the latest sample of the report before the newest: rates are measured across
        # reports, and a guest may report less often than the window.
        earlier = [
            i for i, s in enumerate(history[: older - 1]) if s.last_update != sample.last_update
        ]
        if earlier:
            kept = history[earlier[-1] :]
    if len(kept) >= HISTORY_LIMIT:
        kept = kept[len(kept) - HISTORY_LIMIT + 1 :]
    return (*kept, sample), False


def _needed(before: GuestSample, after: GuestSample) -> bool:
    """Balloon growth between two samples looks like the guest's own deflate-on-OOM.

    The driver gives pages back only to an allocation about to fail, which takes them at once:
    used memory (size less available) grows with the balloon, or the guest stalled allocating
    (6.12 counters). An operator's ``setmem`` or a hot-plugged DIMM brings free pages (available
    grows instead), and a hot-plug moves the domain's maximum. A report not yet made since the
    growth shows no new available memory: read as the guest's own, the safe side.
    """
    if after.max_kib != before.max_kib:
        return False
    used_grew = (after.actual_kib - (after.available_kib or 0)) - (
        before.actual_kib - (before.available_kib or 0)
    )
    stalled = (after.stat(STAT_ALLOC_STALLS) or 0) > (before.stat(STAT_ALLOC_STALLS) or 0)
    return stalled or 2 * used_grew >= after.actual_kib - before.actual_kib


def _observe(
    sample: GuestSample, gs: GuestState, p: GuestPolicy, now: float, open_loop: bool
) -> Facts:
    """The bookkeeping: history, reboot, classification, someone else's resize, a stall."""
    old = gs.history
    same = bool(old) and sample.stats == old[-1].stats
    history, rebooted = _append(old, sample, p.rate_window_s + p.stuck_after_s, same)
    # A guest whose statistics have not moved over its whole history (an idle guest, or one
    # not reporting again yet) is ``none`` or ``unknown`` without computing a rate.
    steady_since = (gs.steady_since or old[-1].t) if same and not rebooted else sample.t
    c = classify(
        history,
        p,
        now,
        since_t=gs.change.t,
        clean=True,
        steady=history[0].t >= steady_since,
    )
    # Reclaim right after our own inflation is the guest freeing what we took: the echo of our
    # change. kswapd reclaiming page cache is no reason to hold (a warm guest would otherwise
    # answer every step with a pause of its own and give its cache back at a crawl). Stalls and
    # direct reclaim with plenty still available are the balloon driver's own allocations
    # reclaiming cold cache (they count as alloc stalls): no rescue and no restart of the calm
    # time, though the next step waits for them to end. Near the headroom the same stalls are
    # the guest's own, and are rescued.
    cur = sample.actual_kib
    available_kib = sample.available_kib
    echo = (
        gs.change.dir < 0
        and gs.change.t is not None
        and now - gs.change.t <= p.cooldown_s + p.rate_window_s
        and (
            c.klass is PressureClass.KSWAPD_RECLAIM
            or (
                c.klass in ECHO_CLASSES
                and (available_kib or 0) >= 2 * p.headroom_kib(cur)
            )
        )
    )
    none_since = None
    if c.klass in CALM_CLASSES or echo:
        none_since = now if gs.none_since is None else gs.none_since
    gs = GuestState(history, none_since, now, steady_since, *gs[4:])  # cheaper than _replace
    kswapd = c.klass is PressureClass.KSWAPD_RECLAIM
    if gs.calm_takes and c.klass not in CALM_CLASSES and not kswapd:
        # Stalls, even those that echo our take, end the run of calm takes: the step falls
        # back to one (kswapd trimming cache is the boundary, not a reason).
        gs = gs._replace(calm_takes=0)
    if rebooted:
        unstuck = without_hold(gs.holds, "stuck-floor")
        gs = gs._replace(stuck_floor_kib=None, holds=unstuck, need_peaks=())
    if sample.available_kib is not None and sample.last_update > 0:
        peaks = remember_need(gs.need_peaks, now, sample.actual_kib - sample.available_kib)
        if peaks is not gs.need_peaks:
            gs = gs._replace(need_peaks=peaks)

    hi = p.max_kib(sample.max_kib)
    tol = max(p.min_change_mib * KIB_PER_MIB, KIB_PER_MIB)
    prev_kib = history[-2].actual_kib if len(history) > 1 else None
    closed = p.enabled and not open_loop
    self_deflated_from = None
    if closed and prev_kib is not None and cur != prev_kib:
        ours = gs.last_target_kib
        toward_ours = ours is not None and abs(cur - ours) < abs(prev_kib - ours)
        if (
            sample.autodeflate
            and cur > prev_kib
            and not toward_ours
            and (cur - prev_kib > tol or (ours is not None and cur - ours >= KIB_PER_MIB))
            and _needed(history[-2], sample)
        ):
            # Deflate-on-OOM gives pages back 1 MiB at a time: any growth past our target is
            # the guest's, however small, or the next offer would take it straight back.
            self_deflated_from = prev_kib if ours is None else min(ours, prev_kib)
            floor = cur
            if gs.stuck_floor_kib is not None and "stuck-floor" in active_holds(gs.holds, p, now):
                floor = max(floor, gs.stuck_floor_kib)
            holds = with_hold(gs.holds, "self-deflated", Held(now))
            gs = gs._replace(
                last_target_kib=cur,
                stuck_floor_kib=floor,
                holds=with_hold(holds, "stuck-floor", Held(now, now + p.pressure_block_s)),
            )
        elif (
            abs(cur - prev_kib) > tol
            and not toward_ours
            and (ours is None or abs(cur - ours) > tol)
        ):
            external = Held(now, now + p.external_hold_s)
            gs = gs._replace(holds=with_hold(gs.holds, "external", external), last_target_kib=cur)
        if cur > prev_kib and not toward_ours and gs.taken_for_host_kib:
            # Given back by someone else (the guest itself, an operator): not to be given twice.
            left = max(gs.taken_for_host_kib - (cur - prev_kib), 0)
            gs = gs._replace(taken_for_host_kib=left)
    change, last_target_kib = gs.change, gs.last_target_kib
    since_change = None if change.t is None else now - change.t
    stalled = (
        closed
        and change.dir < 0
        and last_target_kib is not None
        and since_change is not None
        and since_change >= p.stuck_after_s
        and cur - last_target_kib > tol
        and (prev_kib is None or prev_kib - cur <= tol)
    )
    return Facts(
        sample,
        c,
        p,
        gs,
        now,
        cur,
        p.floor_kib(sample.max_kib),
        hi,
        tol,
        available_kib,
        available_kib or 0,
        since_change,
        change.wall is None
        or sample.last_update > change.wall
        or sample.last_update < change.update,
        "external" in active_holds(gs.holds, p, now),
        stalled,
        self_deflated_from,
        echo,
    )


# --- from proposal to decision -------------------------------------------------------------------


def _hold(
    s: GuestSample,
    c: Classification,
    reason: str,
    lo: int,
    hi: int,
    rule: str,
    available_kib: int | None,
) -> Decision:
    return Decision(
        s.name,
        s.t,
        s.actual_kib,
        s.actual_kib,
        Action.HOLD,
        c.klass,
        c.basis,
        reason,
        None,
        lo,
        hi,
        available_kib,
        rule,
    )


def _settle(f: Facts, rule: str, want: Proposal) -> Proposed:
    """Clamp a change into [floor, max], skip small ones, and record it in the state."""
    s, c, p, gs, cur, lo, hi = f.sample, f.c, f.p, f.gs, f.cur, f.lo, f.hi
    if isinstance(want, Hold):
        return Proposed(_hold(s, c, want.reason, lo, hi, rule, f.available_kib), gs)
    if isinstance(want, Offer):
        d = _hold(s, c, "none: candidate", lo, hi, rule, f.available_kib)
        return Proposed(d, gs, want.spare_kib, p.priority, want.limit)
    if want.stuck_floor_kib is not None:
        stuck = Held(f.now, f.now + p.pressure_block_s)
        gs = gs._replace(
            stuck_floor_kib=want.stuck_floor_kib, holds=with_hold(gs.holds, "stuck-floor", stuck)
        )
    target, reason, clamped = want.target_kib, want.reason, None
    if target > f.top:
        target, clamped = f.top, "max"
    if target < lo:
        target, clamped = lo, "floor"
    if target == cur or (abs(target - cur) < f.tol and not want.rescue):
        reason = f"{reason}; change under {p.min_change_mib} MiB skipped"
        return Proposed(_hold(s, c, reason, lo, hi, rule, f.available_kib), gs)
    if p.mode == "observe":
        verb = "deflate" if target > cur else "inflate"
        reason = f"observe mode, would {verb} to {mib(target)} MiB: {reason}"
        return Proposed(_hold(s, c, reason, lo, hi, rule, f.available_kib), gs)
    direction = 1 if target > cur else -1
    rescued = want.rescue and direction > 0
    gs = gs._replace(
        change=LastChange(f.now, wall_time(s, f.now), s.last_update, direction),
        last_target_kib=target,
        holds=with_hold(gs.holds, "rescue", Held(f.now)) if rescued else gs.holds,
        taken_for_host_kib=max(gs.taken_for_host_kib - max(target - cur, 0), 0),
        calm_takes=0,
    )
    action = Action.INFLATE if direction < 0 else Action.DEFLATE
    d = Decision(
        s.name,
        s.t,
        cur,
        target,
        action,
        c.klass,
        c.basis,
        reason,
        clamped,
        lo,
        hi,
        f.available_kib,
        rule,
    )
    return Proposed(d, gs)


def _growth(f: Facts) -> int:
    """What the guest could still grow into on the host: its free memory, less what our
    inflation takes of it when the guest has not reported since (so that one free figure is
    not taken twice)."""
    free = f.sample.free_kib
    if free is None or free <= 0:
        return 0
    gs = f.gs
    if gs.change.dir < 0 and not f.reported_since_change and gs.last_target_kib is not None:
        then = [h.actual_kib for h in gs.history if gs.change.t is not None and h.t <= gs.change.t]
        if then:
            free -= max(then[-1] - gs.last_target_kib, 0)
    return max(free, 0)


FIT_RULES = frozenset({"waiting", "spare"})
"""The rules under which a guest's free memory may be taken for the host's fit: a calm guest
(every pressure class has a rule of its own before these), whether or not it has been calm for
``stable_s`` yet."""


def _fit(f: Facts, rule: str) -> int:
    """The free memory a calm on-demand guest can give at once for the host's fit: never
    touched, so taking it costs the guest nothing now; within the headroom, floor and recent
    peak need as ``spare``, but with no step and no calm time to wait for. The cooldown, the
    report since our last change, and every hold still apply (``_held_back``)."""
    p = f.p
    if rule not in FIT_RULES or p.mode != "on-demand" or not p.enabled or f.echo:
        return 0
    if _held_back(f):
        return 0
    limits = _spare_limits(f)
    step = limits.pop("step")
    amount = min(f.sample.free_kib or 0, *limits.values())
    # Less than a step is the kernel's own free reserve, or crumbs: ``spare`` takes those.
    return amount if amount >= max(f.tol, step) else 0


def _finish(f: Facts, rule: str, want: Proposal) -> Proposed:
    prop = _settle(f, rule, want)
    growth = _growth(f)
    fit = _fit(f, rule) if growth else 0
    return prop._replace(growth_kib=growth, fit_kib=fit) if growth else prop


def _propose(f: Facts) -> Proposed:
    for name, rule in _NAMED:
        want = rule(f)
        if want is not None:
            return _finish(f, name, want)
    return _finish(f, "spare", spare(f))


def step(
    now: float,
    host: HostSample | None,
    samples: Mapping[str, GuestSample],
    state: EngineState,
    policies: PolicySet,
    open_loop: bool = False,
) -> tuple[list[Decision], EngineState]:
    """One tick: a decision for every guest in ``samples`` and the next engine state."""
    proposals: dict[str, Proposed] = {}
    resolved: dict[str, GuestPolicy] = {}
    for name, sample in samples.items():
        gs = state.guests.get(name)
        if gs is None:
            gs = NEW_GUEST
        problem = size_problem(sample.actual_kib, sample.max_kib)
        if problem is not None:
            c = Classification(PressureClass.UNKNOWN, "unusable sizes", Basis.NONE)
            d = _hold(sample, c, f"left alone: {problem}", 0, 0, "bad-sizes", None)
            proposals[name] = Proposed(d, gs._replace(last_seen_t=now))
            continue
        if gs.history and sample.t < gs.history[-1].t:
            # t must never go back (see GuestSample): this reading cannot be placed in the
            # history without dropping or repeating some of it, so it is not used at all.
            back_s = gs.history[-1].t - sample.t
            c = Classification(PressureClass.UNKNOWN, "reading out of order", Basis.NONE)
            reason = f"left alone: this reading is {back_s:.0f} s older than the last one"
            d = _hold(sample, c, reason, 0, sample.max_kib, "out-of-order", None)
            proposals[name] = Proposed(d, gs)
            continue
        try:
            p = policies.resolve_cached(name, sample.uuid, sample.tags)
        except ValueError as err:
            c = Classification(PressureClass.UNKNOWN, "policy error", Basis.NONE)
            d = _hold(
                sample,
                c,
                f"left alone: {err}",
                0,
                sample.max_kib,
                "policy-error",
                sample.available_kib,
            )
            proposals[name] = Proposed(d, gs._replace(last_seen_t=now))
            continue
        resolved[name] = p
        gs = judge_ask(gs, sample, p, host, now)
        proposals[name] = _propose(_observe(sample, gs, p, now, open_loop))
    shared = share(proposals, samples, resolved, host, policies, now, state)

    next_state = EngineState(
        {n: pr.state for n, pr in proposals.items()}
        | {
            n: gs
            for n, gs in state.guests.items()
            if n not in proposals and now - gs.last_seen_t < FORGET_AFTER_S
        },
        *shared,
    )
    decisions = [proposals[n].decision for n in samples]
    return decisions, next_state
