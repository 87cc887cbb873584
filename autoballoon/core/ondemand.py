"""The pass over all guests: how much of their spare memory is taken, and for whom.

``decide`` runs each guest's rules on its own; the last one, ``spare``, offers what the guest
can give. This pass then shares the offers out (see ``share``): ``proactive`` takes each offer
(``take-proactive``); ``on-demand`` asks only for what brings the host back to its reserve
(``take-on-demand``), judges later what each take returned to the host (``judge_ask``), keeps
the shortage's bookkeeping (``asked``, ``unproductive``, ``host-covered``, ``shortage-taken``),
gives back what it took once the shortage is over (``give-back``), and says what is done about
the host's shortage (``EngineState.host_verdict``). Before any shortage, it keeps what the guests
could still grow into within what the host can give (``take-fit``, see ``_fit``). The rules'
words are in ``decide``'s module docstring.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.samples import GuestSample, HostSample, wall_time
from autoballoon.core.state import (
    Action,
    Ask,
    EngineState,
    GuestState,
    HostVerdict,
    LastChange,
    Proposed,
    Verdict,
    active_holds,
    calm_takes,
)
from autoballoon.core.units import KIB_PER_MIB, mib

YIELD_LOW_RATIO = 0.25
"""A take for the host that returns less than this share to it marks the guest unproductive."""

GIVE_BACK_BAND_RATIO = 0.05
"""Memory taken on demand goes back only while the host's MemAvailable stays this share of its
total above the reserve: the band keeps giving back from starting a shortage of its own."""

FIT_LATER = frozenset({"unknown", "waiting", "asked"})
"""Rules under which a guest's free memory may still be taken for the fit at a later tick."""

SHORTAGE_OVER_S = 60.0
"""The host must stay above its reserve this long for its shortage to be over (and guests
found unproductive in it to be tried again): memory freed for a moment and taken again by
something else on the host is still the same shortage."""


def _moved(gs: GuestState, sample: GuestSample, now: float, target: int) -> GuestState:
    """``gs`` after a change decided over all guests (a take or a give-back) to ``target``."""
    direction = 1 if target > sample.actual_kib else -1
    change = LastChange(now, wall_time(sample, now), sample.last_update, direction)
    run = calm_takes(gs) + 1 if direction < 0 else 0
    return gs._replace(change=change, last_target_kib=target, calm_takes=run)


def _take(
    prop: Proposed,
    sample: GuestSample,
    amount: int,
    now: float,
    why: str,
    rule: str,
    clamped: str | None = None,
) -> Proposed:
    d = prop.decision
    target = d.current_kib - amount
    reason = (
        f"none: {mib(d.available_kib) if d.available_kib else 0} MiB available; "
        f"taking {mib(amount)} MiB ({why})"
    )
    state = _moved(prop.state, sample, now, target)
    if clamped is None:  # what bounded the offer, unless the caller says
        clamped = "host-need" if amount < prop.spare_kib else prop.spare_limit
    decision = d._replace(
        target_kib=target,
        action=Action.INFLATE,
        reason=reason,
        clamped_by=clamped,
        rule=rule,
    )
    return Proposed(decision, state)


def judge_ask(
    gs: GuestState, sample: GuestSample, p: GuestPolicy, host: HostSample | None, now: float
) -> GuestState:
    """Once a take for the host has had time to land, learn what it returned to the host.

    The host got back at most what each of two witnesses saw: the guest's QEMU RSS (ballooned
    pages leave it only if they were ever touched) and the host's MemAvailable since the take
    (pages that left QEMU but were taken at once by something else on the host did not ease
    the shortage either). A guest that returned under ``YIELD_LOW_RATIO`` is left out of the
    host's takes (see ``unproductive_rss_kib``).
    """
    ask = gs.ask
    if not ask.kib or now - ask.t < max(p.cooldown_s, p.stuck_after_s):
        return gs
    seen = []
    if ask.rss_kib is not None and sample.rss_kib is not None:
        seen.append(ask.rss_kib - sample.rss_kib)
    if ask.host_kib is not None and host is not None:
        seen.append(host.mem_available_kib - ask.host_kib)
    got = min(max(min(seen), 0), ask.kib) if seen else 0
    ratio = got / ask.kib
    return gs._replace(
        ask=ask._replace(kib=0, rss_kib=None, host_kib=None),
        host_yield_ratio=ratio,
        unproductive_rss_kib=(sample.rss_kib or 0) if ratio < YIELD_LOW_RATIO else None,
    )


def _unproductive(gs: GuestState, sample: GuestSample, p: GuestPolicy) -> bool:
    if gs.unproductive_rss_kib is None:
        return False
    grown = (sample.rss_kib or 0) - gs.unproductive_rss_kib
    return grown < int(p.inflate_step_ratio * p.max_kib(sample.max_kib))


class Shared(NamedTuple):
    """The host's side of a tick, as EngineState keeps it."""

    verdict: HostVerdict | None
    fine_since: float | None
    peak_kib: int
    taken_kib: int


def _give_back(
    proposals: dict[str, Proposed],
    samples: Mapping[str, GuestSample],
    resolved: Mapping[str, GuestPolicy],
    room_kib: int,
    now: float,
) -> None:
    """The host's shortage is over: give guests back what on-demand took from them.

    A step (``inflate_step_ratio`` of the maximum) per guest per ``cooldown_s`` at most, never
    during an operator's hold (``external_hold_s``), highest priority first, and never more in
    all than ``room_kib``: what keeps the host's MemAvailable ``GIVE_BACK_BAND_RATIO`` of its
    total above its reserve, so that giving back cannot start a shortage of its own (the band
    is the hysteresis).
    """
    holding = [
        (n, pr)
        for n, pr in proposals.items()
        if pr.state.taken_for_host_kib and pr.decision.action is Action.HOLD and n in resolved
    ]
    for name, prop in sorted(holding, key=lambda item: (-item[1].priority, item[0])):
        p, gs, d = resolved[name], prop.state, prop.decision
        if p.mode != "on-demand" or not p.enabled:
            continue
        if gs.change.t is not None and now - gs.change.t < p.cooldown_s:
            continue
        if "external" in active_holds(gs.holds, p, now):
            continue  # an operator's size is left alone, this way too
        step_kib = int(p.inflate_step_ratio * d.max_kib)
        amount = min(gs.taken_for_host_kib, step_kib, d.max_kib - d.current_kib, room_kib)
        if amount < max(p.min_change_mib * KIB_PER_MIB, KIB_PER_MIB):
            continue
        room_kib -= amount
        target = d.current_kib + amount
        state = _moved(gs, samples[name], now, target)._replace(
            taken_for_host_kib=gs.taken_for_host_kib - amount
        )
        reason = (
            f"{d.klass}: the host's shortage is over; giving back {mib(amount)} of the "
            f"{mib(gs.taken_for_host_kib)} MiB taken for it"
        )
        decision = d._replace(
            target_kib=target, action=Action.DEFLATE, reason=reason, rule="give-back"
        )
        proposals[name] = Proposed(decision, state)


def share(
    proposals: dict[str, Proposed],
    samples: Mapping[str, GuestSample],
    resolved: Mapping[str, GuestPolicy],
    host: HostSample | None,
    policies: PolicySet,
    now: float,
    before: EngineState,
) -> Shared:
    """The offers, over all guests: proactive takes each; on-demand only what the host needs.

    What on-demand asked of guests and has not judged yet counts in full against the host's
    shortfall (the host's figure may or may not show it yet: counting it is the safe side).
    Over one shortage, what is asked never exceeds its largest shortfall: memory guests gave
    back and something else on the host took again is not asked for a second time.
    Guests the host got memory back from are asked first; guests it got nothing from are not
    asked again during this shortage. Returns the host's side of the next EngineState.
    """
    short = 0
    if host is not None:
        short = policies.host.reserve_kib(host.mem_total_kib) - host.mem_available_kib
    outstanding = sum(pr.state.ask.kib for pr in proposals.values())
    fine_since = before.host_fine_since
    fine_since = (now if fine_since is None else fine_since) if short < KIB_PER_MIB else None
    peak, so_far = max(before.shortage_peak_kib, short), before.shortage_taken_kib
    if fine_since is not None and now - fine_since >= SHORTAGE_OVER_S:
        # This shortage is over: the next one tries every guest again.
        peak, so_far = max(short, 0), 0
        for n, pr in proposals.items():
            if pr.state.unproductive_rss_kib is not None:
                proposals[n] = pr._replace(state=pr.state._replace(unproductive_rss_kib=None))
    for n, pr in proposals.items():
        was = before.guests.get(n)
        if was is not None and was.ask.kib and not pr.state.ask.kib:  # judged this tick
            so_far += int((pr.state.host_yield_ratio or 0) * was.ask.kib)
    need = min(short, peak - so_far) - outstanding
    asked = spared = capped = 0
    fit_on = (
        host is not None
        and policies.host.fit
        and any(p.mode == "on-demand" and p.enabled for p in resolved.values())
    )
    growth = sum(pr.growth_kib for pr in proposals.values()) if fit_on else 0
    over = growth + short if fit_on else 0
    fitted = _fit(proposals, samples, resolved, now, over, growth, -short) if over > 0 else 0
    offers = [(n, pr) for n, pr in proposals.items() if pr.spare_kib > 0]

    def rank(item: tuple[str, Proposed]) -> tuple[int, int, int, str]:
        ratio = item[1].state.host_yield_ratio
        proven = 0 if ratio is not None and ratio >= YIELD_LOW_RATIO else 1
        return (item[1].priority, proven, -item[1].spare_kib, item[0])

    offers.sort(key=rank)
    for name, prop in offers:
        p = resolved[name]
        if p.mode == "proactive":
            proposals[name] = _take(
                prop, samples[name], prop.spare_kib, now, "proactive", "take-proactive"
            )
            continue
        gs, tol = prop.state, max(p.min_change_mib * KIB_PER_MIB, KIB_PER_MIB)
        if gs.ask.kib:
            reason = f"none: spare memory; {mib(gs.ask.kib)} MiB asked is still on its way"
            rule = "asked"
        elif _unproductive(gs, samples[name], p):
            spared += 1
            reason = (
                f"none: spare memory, but taking it returned "
                f"{gs.host_yield_ratio or 0:.0%} to the host last time: not taken for the host"
            )
            rule = "unproductive"
        elif short < tol:
            reason, rule = (
                "none: spare memory, but the host is above its reserve (on-demand)",
                ("host-above-reserve"),
            )
        elif short - outstanding - asked < tol:
            reason = "none: spare memory; the host's shortfall is covered by what was asked"
            rule = "host-covered"
        elif need < tol:
            capped += 1
            reason = (
                f"none: spare memory; the {mib(so_far)} MiB guests gave in this shortage went "
                "to something else on the host: not asked again until it ends"
            )
            rule = "shortage-taken"
        else:
            amount = min(prop.spare_kib, need)
            why = f"host short by {mib(need)} MiB"
            need -= amount
            asked += amount
            taken = _take(prop, samples[name], amount, now, why, "take-on-demand")
            rss, host_kib = samples[name].rss_kib, host.mem_available_kib if host else None
            state = taken.state._replace(
                ask=Ask(amount, now, rss, host_kib),
                taken_for_host_kib=taken.state.taken_for_host_kib + amount,
            )
            proposals[name] = taken._replace(state=state)
            continue
        decision = prop.decision._replace(reason=reason, rule=rule)
        proposals[name] = prop._replace(decision=decision, spare_kib=0)

    band = int(GIVE_BACK_BAND_RATIO * host.mem_total_kib) if host is not None else 0
    if fine_since is not None and now - fine_since >= SHORTAGE_OVER_S and host is not None:
        # With the fit on, what the guests could still grow into is not room to give back.
        _give_back(proposals, samples, resolved, -over - band if fit_on else -short - band, now)
    if short >= KIB_PER_MIB and any(p.mode == "on-demand" for p in resolved.values()):
        if asked:
            verdict = HostVerdict(Verdict.ASKING, short, asked)
        elif outstanding:
            verdict = HostVerdict(Verdict.WAITING, short, outstanding)
        elif spared:
            verdict = HostVerdict(Verdict.UNTOUCHED, short)
        elif capped:
            verdict = HostVerdict(Verdict.TAKEN_AGAIN, short, so_far)
        else:
            verdict = HostVerdict(Verdict.NOTHING_SPARE, short)
        return Shared(verdict, fine_since, peak, so_far)
    if fitted:
        return Shared(
            HostVerdict(Verdict.FITTING, short, fitted, growth, -short), fine_since, peak, so_far
        )
    if fit_on and over >= band:
        # Guests could grow past what the host can give (the band keeps the figure's small
        # moves from saying so): still fitting while a guest with free memory waits to be
        # calm or to report, else nothing more can be taken now.
        later = any(
            pr.growth_kib and pr.decision.rule in FIT_LATER for pr in proposals.values()
        )
        kind = Verdict.FITTING if later else Verdict.OVERCOMMITTED
        return Shared(HostVerdict(kind, short, 0, growth, -short), fine_since, peak, so_far)
    return Shared(None, fine_since, peak, so_far)


def _fit(
    proposals: dict[str, Proposed],
    samples: Mapping[str, GuestSample],
    resolved: Mapping[str, GuestPolicy],
    now: float,
    over: int,
    growth: int,
    room: int,
) -> int:
    """Keep what the guests could grow into within what the host can give (``take-fit``).

    ``over`` is what their free memory exceeds the host's room above its reserve by: were
    they to fill it (a database warming its cache), the host would run short, too fast for
    any take after the fact. It is taken now from their free memory (see ``decide._fit``),
    lowest priority first, and within a priority in proportion to what each can give, so
    that equal guests end equal. Returns what was taken; it goes back (``give-back``) once
    the host has room for it.
    """
    by_priority: dict[int, list[tuple[str, Proposed]]] = {}
    for n, pr in proposals.items():
        if pr.fit_kib > 0:
            by_priority.setdefault(resolved[n].priority, []).append((n, pr))
    why = f"the guests could grow into {mib(growth)} MiB, the host can give {mib(max(room, 0))} MiB"
    left = over
    for prio in sorted(by_priority):
        group = sorted(by_priority[prio])
        total, share_of = sum(pr.fit_kib for _, pr in group), left
        for name, prop in group:
            amount = min(prop.fit_kib, left, -(-prop.fit_kib * share_of // total))
            tol = max(resolved[name].min_change_mib * KIB_PER_MIB, KIB_PER_MIB)
            if amount < tol:
                continue
            clamped = "free" if amount == prop.fit_kib else "host-need"
            taken = _take(prop, samples[name], amount, now, why, "take-fit", clamped)
            state = taken.state._replace(
                taken_for_host_kib=taken.state.taken_for_host_kib + amount
            )
            proposals[name] = taken._replace(state=state, spare_kib=0)
            left -= amount
        if left <= 0:
            break
    return over - left

