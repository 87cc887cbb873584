"""What the engine returns and remembers: decisions and the state kept between ticks.

The values shared by the per-guest law (``decide``) and the pass over all guests (``ondemand``):
a guest's ``Decision``, what the engine remembers about a guest (``GuestState``) and about the
host (``EngineState``), a guest's proposal before the pass over all guests (``Proposed``), and
the memory of a guest's recent need. Values only: nothing here decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

from autoballoon.core.classify import Basis, PressureClass
from autoballoon.core.policy import GuestPolicy
from autoballoon.core.samples import GuestSample


class Action(StrEnum):
    INFLATE = "inflate"
    DEFLATE = "deflate"
    HOLD = "hold"


class Decision(NamedTuple):
    """What the controller decided for one guest at one tick. A value: acting is elsewhere.

    A NamedTuple for the same reason as ``GuestState``: one is built per guest per tick, and a
    frozen dataclass takes about five times as long to build.
    """

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


class Verdict(StrEnum):
    """What is done about the host's memory, as ``HostVerdict.kind``."""

    ASKING = "asking"
    """Short: guests are asked for memory now."""
    WAITING = "waiting"
    """Short: what was asked of guests has not reached the host yet."""
    UNTOUCHED = "untouched"
    """Short, and ballooning cannot free more: the guests' spare pages were never touched."""
    TAKEN_AGAIN = "taken-again"
    """Short, and ballooning cannot free more: what guests gave was taken by something else."""
    NOTHING_SPARE = "nothing-spare"
    """Short, and no guest can spare memory now."""
    FITTING = "fitting"
    """Not short yet, but the guests could grow into more than the host can give above its
    reserve: their free memory is taken before they touch it (``take-fit``)."""
    OVERCOMMITTED = "overcommitted"
    """The guests could grow into more than the host can give, and none has free memory to
    spare: the host may run short if they do."""


STUCK_VERDICTS = frozenset({
    Verdict.UNTOUCHED, Verdict.TAKEN_AGAIN, Verdict.NOTHING_SPARE, Verdict.OVERCOMMITTED,
})
"""The verdicts where ballooning cannot help the host: an operator should know (a warning)."""


class HostVerdict(NamedTuple):
    """The host's situation after a tick, and what is done about it (``EngineState``).

    A value with its figures, so that logs, ``status`` and metrics read the kind and the
    numbers rather than a sentence; ``text`` is the sentence for people.
    """

    kind: Verdict
    short_kib: int
    """What the host is short of below its reserve (0 or less when it is not short)."""
    amount_kib: int = 0
    """Asked now (``asking``, ``fitting``), on its way (``waiting``), or what guests gave in
    this shortage and was taken again (``taken-again``)."""
    growth_kib: int = 0
    """What the guests could still grow into (their free memory), for ``fitting`` and
    ``overcommitted``."""
    room_kib: int = 0
    """What the host can give above its reserve, for ``fitting`` and ``overcommitted``."""

    @property
    def stuck(self) -> bool:
        """Ballooning cannot help the host any further now."""
        return self.kind in STUCK_VERDICTS

    @property
    def text(self) -> str:
        m = self.amount_kib // 1024
        if self.kind in (Verdict.FITTING, Verdict.OVERCOMMITTED):
            head = (
                f"guests could grow into {self.growth_kib // 1024} MiB, the host can give "
                f"{max(self.room_kib, 0) // 1024} MiB above its reserve; "
            )
            if self.kind is Verdict.FITTING:
                if not m:
                    return head + "waiting for guests to report before taking their free memory"
                return head + f"taking {m} MiB of their free memory"
            return head + "no guest has free memory to spare"
        head = f"host short by {self.short_kib // 1024} MiB; "
        if self.kind is Verdict.ASKING:
            return head + f"asking guests for {m} MiB"
        if self.kind is Verdict.WAITING:
            return head + f"waiting for {m} MiB asked of guests to reach the host"
        if self.kind is Verdict.UNTOUCHED:
            return head + "ballooning cannot free more: guests' spare pages are untouched"
        if self.kind is Verdict.TAKEN_AGAIN:
            return head + (
                f"ballooning cannot free more: the {m} MiB guests gave in this shortage "
                "were taken by something else on the host"
            )
        return head + "no guest can spare memory now"


class Held(NamedTuple):
    """A hold on a guest's inflation (or on its size): when it began and, if its length was
    fixed then, when it ends."""

    since: float
    until: float | None = None
    """None: it lasts the policy's ``HOLD_LENGTHS[reason]`` from ``since``, as the policy reads
    at each tick (a reload that changes it changes the hold)."""


HOLD_LENGTHS: Mapping[str, str] = MappingProxyType({
    "rescue": "pressure_block_s",
    "self-deflated": "pressure_block_s",
})
"""The holds whose length the policy gives at each tick: the reason, and the policy's field.
The others (``external``: an operator's resize, ``external_hold_s``; ``stuck-floor``: the size a
stalled inflation or the guest's own deflate reached, ``pressure_block_s``) end at a time
fixed when they begin."""

NO_HOLDS: Mapping[str, Held] = MappingProxyType({})


def active_holds(holds: Mapping[str, Held], p: GuestPolicy, now: float) -> Mapping[str, Held]:
    """The holds of ``holds`` still in force at ``now``, by reason.

    Kept as data, as kubelet's eviction manager keeps since when each threshold was met: a
    hold that has ended stays in the state (its time may still be read) but is not active.
    """
    if not holds:
        return NO_HOLDS
    return {
        reason: h
        for reason, h in holds.items()
        if (now < h.until if h.until is not None
            else now - h.since < getattr(p, HOLD_LENGTHS[reason]))
    }


def with_hold(holds: Mapping[str, Held], reason: str, held: Held) -> Mapping[str, Held]:
    """``holds`` with ``reason`` held as ``held`` (replacing the one it had)."""
    return {**holds, reason: held}


def without_hold(holds: Mapping[str, Held], reason: str) -> Mapping[str, Held]:
    """``holds`` without ``reason``."""
    return {r: h for r, h in holds.items() if r != reason}


class LastChange(NamedTuple):
    """Our last change of a guest's balloon (``NO_CHANGE`` before any)."""

    t: float | None
    wall: float | None
    """On the wall clock: a report (``last_update``) after it reflects it."""
    update: int
    """The guest's ``last_update`` when we made it: one below it means the wall clock went back
    since, and then any report that differs is a new one."""
    dir: int
    """+1 after a deflate, -1 after an inflate, 0 before any change."""


NO_CHANGE = LastChange(None, None, 0, 0)


class Ask(NamedTuple):
    """What on-demand last took from a guest for the host, until it is judged
    (``ondemand.judge_ask``; ``NO_ASK`` before any)."""

    kib: int
    """Taken and not yet judged (0 once judged)."""
    t: float
    rss_kib: int | None
    """The guest's QEMU RSS when it was asked (what the host holds for it)."""
    host_kib: int | None
    """The host's MemAvailable when the guest was asked."""


NO_ASK = Ask(0, 0.0, None, None)


class GuestState(NamedTuple):
    """What the engine remembers about a guest between ticks.

    A NamedTuple rather than a frozen dataclass: it is copied with a change or two for every
    guest on every tick, and ``_replace`` on a tuple is several times cheaper. What changes
    together is a small NamedTuple of its own, built whole when it changes: our last change
    (``LastChange``), on-demand's pending ask (``Ask``), each hold (``Held``).
    """

    # The four fields every tick rewrites come first (see _observe).
    history: tuple[GuestSample, ...] = ()
    none_since: float | None = None
    last_seen_t: float = 0.0
    steady_since: float | None = None
    """When the guest's statistics last changed: the oldest sample of the current run of
    samples with equal statistics."""
    change: LastChange = NO_CHANGE
    last_target_kib: int | None = None
    """Our last target, or the size someone else (or the guest itself) set since."""
    holds: Mapping[str, Held] = NO_HOLDS
    """What holds the guest, by reason (see ``active_holds``): ``rescue`` (after a deflating
    rescue, no inflation for ``pressure_block_s``), ``self-deflated`` (the same after the guest
    deflated itself), ``external`` (someone else resized it: left alone for ``external_hold_s``)
    and ``stuck-floor`` (not inflated below ``stuck_floor_kib``)."""
    stuck_floor_kib: int | None = None
    """The size a stalled inflation was backed off to, or the guest deflated itself to: not
    inflated below it while the ``stuck-floor`` hold lasts."""
    ask: Ask = NO_ASK
    host_yield_ratio: float | None = None
    """Of the last take for the host, the share the host really got back; None before one."""
    unproductive_rss_kib: int | None = None
    """Set (to the guest's QEMU RSS then, 0 when unknown) when a take for the host returned
    (almost) nothing: never-touched pages free nothing on the host. The guest is not squeezed
    for the host again until the host is above its reserve once more, or the guest's RSS grows
    by an inflate step (it has touched memory since). "Once more" means for ``SHORTAGE_OVER_S``:
    a moment above the reserve is still the same shortage."""
    taken_for_host_kib: int = 0
    """Taken from this guest by on-demand and not given back yet: it goes back, a step at a
    time, once the host's shortage is over (``give-back``); any deflate counts against it."""
    need_peaks: tuple[tuple[float, int], ...] = ()
    """The guest's recent need: (start of a ``NEED_BUCKET_S`` slot, the most it used in it,
    KiB), oldest first, over ``NEED_WINDOW_S``. Used is the balloon's size less available."""
    calm_takes: int = 0
    """Our inflations in a row that the guest took calmly (see ``calm_takes``)."""


NEW_GUEST = GuestState()
"""The state of a guest seen for the first time (one shared value: a state is never mutated)."""


@dataclass
class EngineState:
    guests: dict[str, GuestState] = field(default_factory=dict)
    host_verdict: HostVerdict | None = None
    """The on-demand host's situation after the latest tick, for logs and ``status``: None while
    the host is above its reserve and the guests fit in it (or no guest is on-demand), else what
    is done about it (``HostVerdict``)."""
    host_fine_since: float | None = None
    """Since when the host has been above its reserve (None while it is short): a shortage is
    over only once that has lasted ``SHORTAGE_OVER_S``."""
    shortage_peak_kib: int = 0
    """The largest shortfall of the host's current shortage (0 when there is none)."""
    shortage_taken_kib: int = 0
    """What guests gave back to the host during the current shortage, as judged (see
    ``ondemand.judge_ask``): with what is still on its way, never more than its largest shortfall,
    however often what they give back is taken again on the host."""


NEED_WINDOW_S = 600.0
"""How long a guest's peak need is remembered: ``spare`` never takes below it plus the headroom.
A working set that comes back every few minutes must find its memory there when it does."""


NEED_BUCKET_S = 30.0
"""The slot a remembered peak stands for (bounds the state: 20 pairs at most)."""


def remember_need(
    peaks: tuple[tuple[float, int], ...], now: float, used_kib: int
) -> tuple[tuple[float, int], ...]:
    """``peaks`` with ``used_kib`` seen at ``now``, and peaks older than the window dropped."""
    slot = now - now % NEED_BUCKET_S
    if peaks and peaks[-1][0] == slot:  # the same slot: most ticks, and most leave it as it is
        return peaks if used_kib <= peaks[-1][1] else (*peaks[:-1], (slot, used_kib))
    kept = tuple(pk for pk in peaks if pk[0] > now - NEED_WINDOW_S)
    return (*kept, (slot, used_kib))


STEP_GROWTH_MAX = 3
"""An inflation step grows by one base step per calm take in a row, up to this many."""


def calm_takes(gs: GuestState) -> int:
    """Our inflations in a row that the guest took calmly: its calm time has run since before
    our last change, an inflation (the reclaim that echoes a take does not break it). Any
    pressure since, a deflate, or someone else's resize ends the run."""
    ch = gs.change
    calm = ch.dir < 0 and ch.t is not None and gs.none_since is not None
    return gs.calm_takes if calm and gs.none_since <= ch.t else 0  # type: ignore[operator]


def step_growth(gs: GuestState) -> int:
    """How many base steps the next inflation may take: one more per calm take in a row, up
    to ``STEP_GROWTH_MAX`` (a guest that shows slack is probed faster; any sign of pressure
    brings the step back to one)."""
    return min(1 + calm_takes(gs), STEP_GROWTH_MAX)


def peak_need_kib(gs: GuestState) -> int:
    """The most the guest used within ``NEED_WINDOW_S``; 0 before any report."""
    return max((used for _, used in gs.need_peaks), default=0)


class Proposed(NamedTuple):
    """One guest's decision and next state from its own rules, before the pass over all guests."""

    decision: Decision
    state: GuestState
    spare_kib: int = 0
    """For inflation candidates: the most this guest could give this tick."""
    priority: int = 0
    spare_limit: str | None = None
    growth_kib: int = 0
    """What the guest could still grow into on the host: its free memory (never touched, or
    given back by free page reporting), less what our inflation not yet reported will take."""
    fit_kib: int = 0
    """For a calm on-demand guest: the free memory it could give at once to keep the guests'
    growth within what the host can give (``take-fit``): no step, no calm time to wait for."""
