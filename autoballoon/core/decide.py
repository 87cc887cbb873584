"""Decide: from this tick's samples and each guest's state, a balloon target per guest.

Purely computational, no side effects: ``step(now, host, samples, state, policies)`` returns the
decisions (values) and the next state. The daemon applies the decisions through an actuator;
dry-run swaps the actuator; replay feeds recorded samples. All three run this exact function.

The control law, per guest (sizes in KiB; "inflate" takes memory from the guest, "deflate"
gives it back):

1. Rescue first. ``oom`` and ``thrashing`` deflate at once by the large step, ``global-reclaim``
   by the medium step, ignoring cooldowns: the evidence is measured only since our own last
   change, so one event is answered once. Available memory under the low-water mark deflates by
   the medium step as soon as the guest has reported since our last change. Stale statistics on
   a guest we hold below its maximum give back a medium step (a guest too busy to report may be
   thrashing).
2. ``cgroup-stall`` and ``reclaim-struggling`` hold: more memory does not cure a limit inside the
   guest, and a struggling kswapd means there is nothing spare; neither is ever inflated. A
   ``cgroup-stall`` guest whose available memory is under its headroom is short all the same
   and gets the medium step.
3. Take slowly. A guest is an inflation candidate only in class ``none`` held for ``stable_s``,
   outside the cooldown after any change, outside ``pressure_block_s`` after a rescue, outside
   an operator's hold, and with available memory above its headroom. The step is at most
   ``inflate_step_ratio`` of its maximum and never leaves less than the headroom available.
   ``proactive`` takes from every candidate; ``on-demand`` only what brings the host back to its
   reserve, lowest priority and most spare first.
4. Clamp into [floor, max] (and above a learned stuck floor), skip changes under
   ``min_change_mib``. The dead band between low-water and headroom is where nothing happens;
   that and the cooldowns are why a constant input settles and stays put.

With ``open_loop=True`` (dry-run, replay) the balloon never follows the decisions, so the two
closed-loop detectors are off: a stalled inflation, and a size changed by someone else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import NamedTuple

from autoballoon.core.classify import Basis, Classification, PressureClass, classify
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.samples import CUMULATIVE_STATS, GuestSample, HostSample
from autoballoon.core.units import KIB_PER_MIB


class Action(StrEnum):
    INFLATE = "inflate"
    DEFLATE = "deflate"
    HOLD = "hold"


RESCUE_CLASSES = {
    PressureClass.OOM: "large",
    PressureClass.THRASHING: "large",
    PressureClass.GLOBAL_RECLAIM: "medium",
}

HISTORY_LIMIT = 64
"""Samples kept per guest at most, whatever the window and tick rate (bounds memory)."""

FORGET_AFTER_S = 600.0
"""A guest not seen for this long (domain gone) is dropped from the state."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What the controller decided for one guest at one tick. A value: acting is elsewhere."""

    guest: str
    t: float
    current_kib: int
    target_kib: int
    action: Action
    klass: PressureClass
    basis: Basis
    reason: str
    clamped_by: str | None = None
    floor_kib: int = 0
    max_kib: int = 0
    available_kib: int | None = None
    rule: str = ""
    """The rule of the control law that made this decision (see the module docstring)."""


class GuestState(NamedTuple):
    """What the engine remembers about a guest between ticks.

    A NamedTuple rather than a frozen dataclass: it is copied with a change or two for every
    guest on every tick, and ``_replace`` on a tuple is several times cheaper.
    """

    history: tuple[GuestSample, ...] = ()
    klass: PressureClass = PressureClass.UNKNOWN
    none_since: float | None = None
    last_change_t: float | None = None
    last_change_dir: int = 0
    """+1 after a deflate, -1 after an inflate, 0 before any change."""
    last_target_kib: int | None = None
    last_rescue_t: float | None = None
    external_until: float | None = None
    stuck_floor_kib: int | None = None
    stuck_until: float | None = None
    direction_changes: int = 0
    last_seen_t: float = 0.0


@dataclass
class EngineState:
    guests: dict[str, GuestState] = field(default_factory=dict)


class _Proposal(NamedTuple):
    decision: Decision
    state: GuestState
    spare_kib: int = 0
    """For inflation candidates: the most this guest could give this tick."""
    priority: int = 0
    spare_limit: str | None = None
    """What bounded ``spare_kib``: "step", "floor", "stuck-floor" or None (the headroom)."""


def _append(
    history: tuple[GuestSample, ...], sample: GuestSample, keep_s: float
) -> tuple[tuple[GuestSample, ...], bool]:
    """History with ``sample`` added; restarts (and says so) when a counter went down."""
    if history:
        prev = history[-1]
        if sample.t <= prev.t:
            history = history[:-1]  # same instant read twice: keep the newer reading
        else:
            before, now = prev.stats, sample.stats
            for name in CUMULATIVE_STATS:
                a = before.get(name)
                if a is not None:
                    b = now.get(name)
                    if b is not None and b < a:
                        return (sample,), True
    horizon = sample.t - keep_s
    kept = [s for s in history if s.t >= horizon]
    # keep one sample older than the horizon: it is the baseline of the window's rates.
    older = len(history) - len(kept)
    if older:
        kept.insert(0, history[older - 1])
    kept.append(sample)
    return tuple(kept[-HISTORY_LIMIT:]), False


def _hold(s: GuestSample, c: Classification, reason: str, lo: int, hi: int) -> Decision:
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
        s.available_kib,
    )


def _change(
    s: GuestSample,
    c: Classification,
    target: int,
    reason: str,
    lo: int,
    hi: int,
    clamped: str | None = None,
) -> Decision:
    action = Action.INFLATE if target < s.actual_kib else Action.DEFLATE
    return Decision(
        s.name,
        s.t,
        s.actual_kib,
        target,
        action,
        c.klass,
        c.basis,
        reason,
        clamped,
        lo,
        hi,
        s.available_kib,
    )


def _propose(
    sample: GuestSample, gs: GuestState, p: GuestPolicy, now: float, open_loop: bool
) -> _Proposal:
    keep_s = p.rate_window_s + p.stuck_after_s
    history, rebooted = _append(gs.history, sample, keep_s)
    if rebooted:
        gs = gs._replace(stuck_floor_kib=None, stuck_until=None)
    prev = history[-2] if len(history) > 1 else None
    c = classify(history, p, now, since_t=gs.last_change_t, clean=True)
    none_since = gs.none_since if c.klass is PressureClass.NONE else None
    if c.klass is PressureClass.NONE and none_since is None:
        none_since = now
    gs = gs._replace(history=history, klass=c.klass, none_since=none_since, last_seen_t=now)

    cur = sample.actual_kib
    hi = p.max_kib(sample.max_kib)
    lo = p.floor_kib(sample.max_kib)
    tol = max(p.min_change_mib * KIB_PER_MIB, KIB_PER_MIB)

    def hold(reason: str) -> _Proposal:
        return _Proposal(_hold(sample, c, reason, lo, hi), gs)

    if not p.enabled:
        return hold("opted out (enabled = false)")

    # Closed loop only: someone else resized the balloon.
    if not open_loop and prev is not None and abs(cur - prev.actual_kib) > tol:
        ours = gs.last_target_kib
        toward_ours = ours is not None and abs(cur - ours) < abs(prev.actual_kib - ours)
        if not toward_ours and (ours is None or abs(cur - ours) > tol):
            gs = gs._replace(external_until=now + p.external_hold_s, last_target_kib=cur)
    external = gs.external_until is not None and now < gs.external_until

    since_change = None if gs.last_change_t is None else now - gs.last_change_t
    reported_since_change = gs.last_change_t is None or sample.last_update > gs.last_change_t

    def change(target: int, reason: str, rescue: bool = False) -> _Proposal:
        clamped = None
        if target > hi:
            target, clamped = hi, "max"
        if target < lo:
            target, clamped = lo, "floor"
        if target == cur or (abs(target - cur) < tol and not rescue):
            return hold(f"{reason}; change under {p.min_change_mib} MiB skipped")
        if p.mode == "observe":
            verb = "deflate" if target > cur else "inflate"
            return hold(f"observe mode, would {verb} to {target // KIB_PER_MIB} MiB: {reason}")
        direction = 1 if target > cur else -1
        flips = gs.direction_changes + (1 if gs.last_change_dir == -direction else 0)
        new = gs._replace(
            last_change_t=now,
            last_change_dir=direction,
            last_target_kib=target,
            direction_changes=flips,
            last_rescue_t=now if (rescue and direction > 0) else gs.last_rescue_t,
        )
        return _Proposal(_change(sample, c, target, reason, lo, hi, clamped), new)

    def step(kind: str) -> int:
        ratio = p.deflate_large_ratio if kind == "large" else p.deflate_medium_ratio
        return max(int(ratio * hi), tol)

    # 1. Rescue.
    if c.klass in RESCUE_CLASSES:
        if cur >= hi:
            return hold(f"{c.klass}: {c.reason}; already at max")
        return change(cur + step(RESCUE_CLASSES[c.klass]), f"{c.klass}: {c.reason}", rescue=True)

    if cur < lo:
        return change(lo, f"{c.klass}: below the floor {lo // KIB_PER_MIB} MiB")

    # Closed loop only: an inflation the balloon does not follow is backed off.
    if (
        not open_loop
        and gs.last_change_dir < 0
        and gs.last_target_kib is not None
        and since_change is not None
        and since_change >= p.stuck_after_s
        and cur - gs.last_target_kib > tol
        and (prev is None or prev.actual_kib - cur <= tol)
    ):
        wanted = gs.last_target_kib
        target = min(hi, cur + step("medium"))
        # change() reads gs when called: the stuck floor goes into the state it records.
        gs = gs._replace(stuck_floor_kib=target, stuck_until=now + p.pressure_block_s)
        return change(
            target,
            f"inflation stalled at {cur // KIB_PER_MIB} MiB (target {wanted // KIB_PER_MIB} MiB "
            f"for {since_change:.0f} s): the guest cannot give more",
            rescue=True,
        )

    if c.klass is PressureClass.UNKNOWN:
        stale = sample.last_update > 0 and now - sample.last_update > p.stale_after_s
        if stale and cur < hi and (since_change is None or since_change >= p.cooldown_s):
            return change(cur + step("medium"), f"unknown: {c.reason}; giving memory back")
        return hold(f"unknown: {c.reason}; never inflated")

    available = sample.available_kib or 0
    low_water = p.low_water_kib(cur)
    if available < low_water and reported_since_change:
        if cur >= hi:
            return hold(
                f"{c.klass}: available {available // KIB_PER_MIB} MiB below low water; at max"
            )
        return change(
            cur + step("medium"),
            f"{c.klass}: available {available // KIB_PER_MIB} MiB below low water "
            f"{low_water // KIB_PER_MIB} MiB",
            rescue=True,
        )

    if c.klass is PressureClass.CGROUP_STALL and available < p.headroom_kib(cur) and cur < hi:
        # The matrix reads stalls without direct reclaim as a limit inside the guest; it is
        # silent on the guest's own MemAvailable. Seen in the lab: a small guest short of
        # memory stalls with little direct scanning too. Short is short: give memory back.
        return change(
            cur + step("medium"),
            f"{c.klass}: {c.reason}; but only {available // KIB_PER_MIB} MiB available, under the "
            f"headroom {p.headroom_kib(cur) // KIB_PER_MIB} MiB",
            rescue=True,
        )

    if c.klass is not PressureClass.NONE:
        why = {
            PressureClass.CGROUP_STALL: "stalls come from a limit inside the guest; more memory "
            "would not help, so nothing is taken or given",
            PressureClass.RECLAIM_STRUGGLING: "kswapd cannot reclaim: nothing to spare",
        }.get(c.klass, "not inflated while under pressure")
        return hold(f"{c.klass}: {c.reason}; {why}")

    # 3. Inflation candidate?
    blockers = []
    if now - (none_since or now) < p.stable_s:
        blockers.append(f"calm for {now - (none_since or now):.0f}/{p.stable_s:.0f} s")
    if since_change is not None and since_change < p.cooldown_s:
        blockers.append(f"cooldown {since_change:.0f}/{p.cooldown_s:.0f} s")
    if gs.last_rescue_t is not None and now - gs.last_rescue_t < p.pressure_block_s:
        blockers.append(
            f"blocked after rescue {now - gs.last_rescue_t:.0f}/{p.pressure_block_s:.0f} s"
        )
    if external:
        blockers.append("resized by someone else; holding")
    if blockers:
        return hold("none: " + ", ".join(blockers))
    if p.mode == "observe":
        return hold("none: observe mode never acts")
    headroom = p.headroom_kib(cur)
    spare = available - headroom
    floor = lo
    if gs.stuck_floor_kib is not None and gs.stuck_until is not None and now < gs.stuck_until:
        floor = max(floor, gs.stuck_floor_kib)
    if cur > hi:
        return change(hi, f"none: above max {hi // KIB_PER_MIB} MiB")
    limits = {
        None: spare,
        "stuck-floor" if floor > lo else "floor": cur - floor,
        "step": int(p.inflate_step_ratio * hi),
    }
    limit = min(limits, key=lambda k: limits[k])
    spare = limits[limit]
    if spare < tol:
        return hold(
            f"none: {available // KIB_PER_MIB} MiB available, "
            f"headroom {headroom // KIB_PER_MIB} MiB"
            + (f", at {limit}" if limit else "")
        )
    return _Proposal(_hold(sample, c, "none: candidate", lo, hi), gs, spare, p.priority, limit)


def _take(prop: _Proposal, amount: int, now: float, why: str) -> _Proposal:
    d = prop.decision
    target = d.current_kib - amount
    reason = (
        f"none: {d.available_kib // KIB_PER_MIB if d.available_kib else 0} MiB available; "
        f"taking {amount // KIB_PER_MIB} MiB ({why})"
    )
    gs = prop.state
    flips = gs.direction_changes + (1 if gs.last_change_dir == 1 else 0)
    state = gs._replace(
        last_change_t=now, last_change_dir=-1, last_target_kib=target, direction_changes=flips
    )
    clamped = "host-need" if amount < prop.spare_kib else prop.spare_limit
    return _Proposal(
        replace(d, target_kib=target, action=Action.INFLATE, reason=reason, clamped_by=clamped),
        state,
    )


def step(
    now: float,
    host: HostSample | None,
    samples: Mapping[str, GuestSample],
    state: EngineState,
    policies: PolicySet,
    open_loop: bool = False,
) -> tuple[list[Decision], EngineState]:
    """One tick: a decision for every guest in ``samples`` and the next engine state."""
    proposals: dict[str, _Proposal] = {}
    resolved: dict[str, GuestPolicy] = {}
    for name, sample in samples.items():
        gs = state.guests.get(name, GuestState())
        try:
            p = policies.resolve_cached(name, sample.uuid)
        except ValueError as err:
            c = Classification(PressureClass.UNKNOWN, "policy error", Basis.NONE)
            d = _hold(sample, c, f"left alone: {err}", 0, sample.max_kib)
            proposals[name] = _Proposal(d, gs._replace(last_seen_t=now))
            continue
        resolved[name] = p
        proposals[name] = _propose(sample, gs, p, now, open_loop)

    candidates = [(n, pr) for n, pr in proposals.items() if pr.spare_kib > 0]
    if candidates:
        need = 0
        if host is not None:
            need = policies.host.reserve_kib(host.mem_total_kib) - host.mem_available_kib
        candidates.sort(key=lambda item: (item[1].priority, -item[1].spare_kib, item[0]))
        for name, prop in candidates:
            p = resolved[name]
            if p.mode == "proactive":
                proposals[name] = _take(prop, prop.spare_kib, now, "proactive")
                continue
            tol = max(p.min_change_mib * KIB_PER_MIB, KIB_PER_MIB)
            if need < tol:
                reason = "none: spare memory, but the host is above its reserve (on-demand)"
                proposals[name] = prop._replace(
                    decision=replace(prop.decision, reason=reason), spare_kib=0
                )
                continue
            amount = min(prop.spare_kib, need)
            need -= amount
            proposals[name] = _take(
                prop, amount, now, f"host short by {(amount + need) // KIB_PER_MIB} MiB"
            )

    next_state = EngineState(
        {n: pr.state for n, pr in proposals.items()}
        | {
            n: gs
            for n, gs in state.guests.items()
            if n not in proposals and now - gs.last_seen_t < FORGET_AFTER_S
        }
    )
    decisions = [proposals[n].decision for n in samples]
    return decisions, next_state
