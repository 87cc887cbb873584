"""Replay: a recorded trace through the production engine, and what it would have done.

Sits after ``autoballoon.trace`` (which reads the ticks) and calls the pure core's
``decide.step`` once per tick, unchanged. Under other policies than the recorded ones it runs
with ``open_loop=True``: the balloon never follows the replayed decisions, so every tick's
``actual_kib`` is the trace's own. The engine then answers "given what the guests really
showed, what would this policy have decided at each tick?", not "where would the balloon have
ended up": a closed loop would have changed what the guests showed.

Under the policies the trace records (``RecordedRun``) it runs as the recording daemon ran:
closed loop when that daemon acted (the recorded balloon is the one that followed exactly
these decisions), open loop when it dry-ran, on the recorded clock, starting the engine from
nothing where a new daemon run starts and switching policies where a reload changed them. It
then gives the decisions the daemon took.

Nothing here reads a clock, prints or touches libvirt; the same ticks and policies always give
the same decisions and the same summary (the determinism ``replay --json`` promises).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from autoballoon.core.classify import PRESSURE_CLASSES
from autoballoon.core.decide import Action, Decision, EngineState, step
from autoballoon.core.policy import PolicySet
from autoballoon.core.units import KIB_PER_MIB
from autoballoon.report import GuestReading, GuestRecord, assemble_rows, dry_run
from autoballoon.trace import RecordedRun, RecordedTick

ACTIONS = tuple(str(a) for a in Action)
_PRESSURE = frozenset(str(k) for k in PRESSURE_CLASSES)


@dataclass
class Steps:
    """A step function kept as its change points only: memory grows with changes, not ticks."""

    t: list[float] = field(default_factory=list)
    v: list[Any] = field(default_factory=list)

    def add(self, t: float, value: Any) -> None:
        if not self.v or self.v[-1] != value:
            self.t.append(t)
            self.v.append(value)


@dataclass
class GuestSeries:
    """What ``--plot`` draws for one guest: balloon size, standing target, pressure class."""

    actual_kib: Steps = field(default_factory=Steps)
    target_kib: Steps = field(default_factory=Steps)
    klass: Steps = field(default_factory=Steps)
    end_t: float = 0.0


@dataclass
class GuestReport:
    """Running totals for one guest; ``as_dict`` turns them into the summary's figures."""

    ticks: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    reclaimable_kib_sum: int = 0
    reclaimed_kib_sum: int = 0
    pressure_ticks_inflated: int = 0
    direction_changes: int = 0
    last_direction: int = 0
    standing_target_kib: int | None = None
    """The last target the policy set; None before its first change (then: the trace's actual)."""

    def as_dict(self) -> dict[str, Any]:
        n = max(self.ticks, 1)
        return {
            "ticks": self.ticks,
            "classes": dict(sorted(self.classes.items())),
            "actions": dict(self.actions),
            "reclaimable_mib": round(self.reclaimable_kib_sum / n / KIB_PER_MIB, 1),
            "reclaimed_mib": round(self.reclaimed_kib_sum / n / KIB_PER_MIB, 1),
            "pressure_ticks_inflated": self.pressure_ticks_inflated,
            "direction_changes": self.direction_changes,
        }


def reclaimable_kib(row: GuestRecord, headroom_mib: int, headroom_ratio: float) -> int:
    """How far below its maximum the guest could have been at this tick and kept its headroom.

    The guest uses ``actual - available``; the smallest balloon that leaves it the policy's
    headroom (``max(headroom_mib, headroom_ratio * size)``) is the larger of ``used +
    headroom_mib`` and ``used / (1 - headroom_ratio)``, and never below the floor. Unknown when
    the guest reports no available memory: counted as 0.
    """
    if row.available_kib is None:
        return 0
    used = max(row.actual_kib - row.available_kib, 0)
    smallest = used + headroom_mib * KIB_PER_MIB
    if headroom_ratio > 0:
        smallest = max(smallest, math.ceil(used / (1 - headroom_ratio)))
    smallest = max(smallest, row.floor_kib)
    return max(row.max_kib - smallest, 0)


def decision_record(d: Decision) -> dict[str, Any]:
    """One ``replay --json`` line: the engine's decision for one guest at one tick."""
    return {
        "t": d.t,
        "guest": d.guest,
        "class": str(d.klass),
        "action": str(d.action),
        "current_kib": d.current_kib,
        "target_kib": d.target_kib,
        "reason": d.reason,
        "rule": d.rule,
    }


class Replayer:
    """Feeds ticks through ``decide.step`` and keeps per-guest totals.

    Given ``policies``, it replays under them, open loop. Given none, it follows what the trace
    recorded (``recorded``: the header's run; then each tick's ``run`` and ``policies``), as the
    daemon decided. ``keep_series`` also keeps what ``--plot`` needs, as change points (see
    ``Steps``).
    """

    def __init__(
        self,
        policies: PolicySet | None,
        keep_series: bool = False,
        recorded: RecordedRun | None = None,
    ) -> None:
        self.follows_recording = policies is None
        if policies is None:
            if recorded is None or recorded.policies is None:
                raise ValueError("the trace records no policies: give some")
            policies = recorded.policies
        self.policies = policies
        self.open_loop = True
        if self.follows_recording and recorded is not None:
            self.open_loop = recorded.dry_run is not False
        self.state = EngineState()
        self.reports: dict[str, GuestReport] = {}
        self.series: dict[str, GuestSeries] | None = {} if keep_series else None
        self.ticks = 0
        self.first_t: float | None = None
        self.last_t: float | None = None

    def feed(self, tick: RecordedTick) -> list[Decision]:
        """One tick through the engine; the decisions (stamped with the tick's wall-clock
        ``t``), sorted by guest name."""
        if tick.run is not None:
            self.state = EngineState()  # the daemon started again: so does its engine
            if self.follows_recording:
                if tick.run.policies is not None:
                    self.policies = tick.run.policies
                self.open_loop = tick.run.dry_run is not False
        if tick.policies is not None and self.follows_recording:
            self.policies = tick.policies
        decisions, self.state = step(
            tick.clock, tick.host, tick.samples, self.state, self.policies, self.open_loop
        )
        readings = [GuestReading(s) for s in tick.samples.values()]
        rows = assemble_rows(readings, decisions, dry_run(decisions))
        if tick.clock != tick.t:
            decisions = [d._replace(t=tick.t) for d in decisions]
        self.ticks += 1
        if self.first_t is None:
            self.first_t = tick.t
        self.last_t = tick.t
        for row in sorted(rows, key=lambda g: g.name):
            self._account(row, tick.t)
        decisions.sort(key=lambda d: d.guest)
        return decisions

    def _account(self, row: GuestRecord, t: float) -> None:
        """One row into its guest's running totals (``t``: the tick's wall clock)."""
        r = self.reports.get(row.name)
        if r is None:
            r = self.reports[row.name] = GuestReport()
        d = row.decision
        klass = str(row.klass)
        action = str(d.action)
        r.ticks += 1
        r.classes[klass] = r.classes.get(klass, 0) + 1
        r.actions[action] += 1
        if d.action is not Action.HOLD:
            direction = 1 if d.action is Action.DEFLATE else -1
            if r.last_direction == -direction:
                r.direction_changes += 1
            r.last_direction = direction
            r.standing_target_kib = d.target_kib
        target = row.actual_kib if r.standing_target_kib is None else r.standing_target_kib
        r.reclaimed_kib_sum += max(row.max_kib - target, 0)
        if klass in _PRESSURE and target < row.max_kib:
            r.pressure_ticks_inflated += 1
        try:
            p = self.policies.resolve_cached(row.name, row.uuid, row.sample.tags)
        except ValueError:
            pass  # the engine left the guest alone; nothing is reclaimable under no policy
        else:
            r.reclaimable_kib_sum += reclaimable_kib(row, p.headroom_mib, p.headroom_ratio)
        if self.series is not None:
            s = self.series.get(row.name)
            if s is None:
                s = self.series[row.name] = GuestSeries()
            s.actual_kib.add(t, row.actual_kib)
            s.target_kib.add(t, target)
            s.klass.add(t, klass)
            s.end_t = t

    def summary(self) -> dict[str, Any]:
        """The whole replay's figures, per guest (sorted by name)."""
        duration = 0.0
        if self.first_t is not None and self.last_t is not None:
            duration = self.last_t - self.first_t
        return {
            "ticks": self.ticks,
            "duration_s": round(duration, 3),
            "guests": {name: self.reports[name].as_dict() for name in sorted(self.reports)},
        }


def replay(ticks: Iterable[RecordedTick], policies: PolicySet) -> dict[str, Any]:
    """Replay every tick under ``policies``; the summary (see ``Replayer.summary``)."""
    r = Replayer(policies)
    for tick in ticks:
        r.feed(tick)
    return r.summary()

