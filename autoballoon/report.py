"""The report values: what one tick saw, decided and did, and how the loop is doing.

Sits below the daemon and below every sink, above the pure core. The daemon builds these values
once per tick; the sinks (log, status file, metrics, trace) read them and nothing else. Replay
builds the same values from a recorded trace, so anything that can produce a tick can feed any
sink. Nothing here reads a clock, talks to a hypervisor or knows a controller: values only.

The values of one tick, from the edge inwards:

- ``GuestReading``: what observe read of one guest (its sanitised sample, and how its
  statistics were read).
- ``Outcome``: what act did with one guest's decision (held, applied, dry-run, or failed and
  why).
- ``GuestRecord``: one guest at one tick, the row every writer reads: its reading, the core's
  decision (``DecisionRecord``) and the outcome, typed, with one serializer (``to_json``).
  ``assemble_rows`` is the one function that builds a tick's rows. The status file's guest
  rows are these records, the trace's per-guest ``decision`` is its ``DecisionRecord``, the log
  and the metrics read their attributes; figures derived from rows (``reclaimed_kib``,
  ``DecisionRecord.failed``) are computed here, once.
- ``TickReport``: one tick's host sample and rows, the guests skipped, and the host verdict.
- ``Health``: the loop's own counters (ticks, failures, overruns, hypervisor trouble), frozen
  when the tick is published, in words that do not depend on the backend.

The names around a tick, from the edge inwards: ``hypervisor.Reading`` is what the backend
returned (raw, untrusted); ``observe.Observation`` is that reading sanitised into one
``GuestReading`` per guest, plus what the loop needs to report (skipped guests);
``trace.RecordedTick`` is the part of an observation a trace keeps (the engine's inputs, and the
decisions taken live). ``TickReport`` is an observation's rows, each with its decision and
outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr

from autoballoon.core.classify import Basis, PressureClass
from autoballoon.core.decide import NOTABLE_HOLDS, Action, Decision
from autoballoon.core.policy import PolicySet
from autoballoon.core.samples import GuestSample, HostSample
from autoballoon.core.state import HostVerdict

StatsKind = Literal["extended", "standard", "none"]


class GuestReading(NamedTuple):
    """Observe's output for one guest: its sanitised sample, and how its statistics were read."""

    sample: GuestSample
    source: str | None = None
    """"qmp" (6.12 counters read through QEMU) or "libvirt" (standard statistics only)."""


APPLIED = "applied"
DRY_RUN = "dry-run"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What act did with one guest's decision: the one kind of value an actuator returns."""

    kind: Literal["held", "applied", "dry-run", "failed"]
    why: str = ""
    """For "failed": the error, as it is written (``result``)."""

    @property
    def result(self) -> str | None:
        """The outcome as written (``DecisionRecord.result``): None for a hold, "applied",
        "dry-run", or the error for a failure."""
        if self.kind == "held":
            return None
        return self.why if self.kind == "failed" else self.kind

    @classmethod
    def failed(cls, why: str) -> Outcome:
        return cls("failed", why)


HELD = Outcome("held")
DONE = Outcome("applied")
WOULD = Outcome("dry-run")


def dry_run(decisions: Sequence[Decision]) -> list[Outcome]:
    """The outcomes when nothing is applied (a dry run, a replay): every change would be made,
    holds are held."""
    return [HELD if d.action is Action.HOLD else WOULD for d in decisions]


class ReportValue(BaseModel):
    """Base of the typed report records: frozen; JSON keys are the field names (or aliases)."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this record: the one serializer every writer uses."""
        return self.model_dump(mode="json", by_alias=True)


class DecisionRecord(ReportValue):
    """The controller's decision for one guest at one tick, and what became of it."""

    action: Action
    target_kib: int
    reason: str
    rule: str = ""
    """The rule of the control law that decided ("" when the engine named none)."""
    clamped_by: str | None = None
    """"floor" or "max" when the target was clamped into the policy's range."""
    result: str | None = None
    """"applied", "dry-run" or an error message for a change; None for a hold."""

    @property
    def failed(self) -> bool:
        """A change decided and not made: the hypervisor refused it, or the guest was gone."""
        return self.result is not None and self.result not in (APPLIED, DRY_RUN)

    @property
    def notable(self) -> bool:
        """A change, or a hold that reports what the guest did to its balloon
        (``NOTABLE_HOLDS``): the log and the status file show these as changes."""
        return self.action is not Action.HOLD or self.rule in NOTABLE_HOLDS


class GuestRecord(ReportValue):
    """One guest at one tick: sizes (KiB), class, the statistics behind it, the decision."""

    name: str
    uuid: str
    actual_kib: int
    """The balloon's current size: memory the guest has."""
    max_kib: int
    """The domain's maximum memory (the balloon's ceiling)."""
    policy_max_kib: int
    """The most the policy gives this guest (its max_mib, else the domain's maximum)."""
    floor_kib: int
    available_kib: int | None
    """Memory available inside the guest, from its own report (None: not reported)."""
    rss_kib: int | None = None
    """The QEMU process's resident memory on the host, when the backend reports it."""
    klass: PressureClass = Field(
        validation_alias=AliasChoices("class", "klass"), serialization_alias="class"
    )
    basis: Basis
    stats: StatsKind
    """Which statistics the guest reports: the 6.12 counters, the standard ones, or none."""
    source: str | None = None
    """How they were read: "qmp" or "libvirt"."""
    autodeflate: bool = False
    """The balloon has deflate-on-OOM: the guest may take balloon pages back itself."""
    free_page_reporting: bool = False
    """The balloon reports the pages the guest frees to the host."""
    decision: DecisionRecord
    _sample: GuestSample | None = PrivateAttr(None)
    _engine: Decision | None = PrivateAttr(None)

    @property
    def sample(self) -> GuestSample:
        """The sanitised sample the row was assembled from (the trace writes it, the metrics
        read its counters). Only rows from ``assemble_rows`` have one; a row read back from a
        file does not."""
        if self._sample is None:
            raise ValueError(f"guest {self.name}: this record was not assembled from a sample")
        return self._sample

    @property
    def engine_decision(self) -> Decision:
        """The core's own decision value this row's ``decision`` was written from (only rows
        from ``assemble_rows`` have one)."""
        if self._engine is None:
            raise ValueError(f"guest {self.name}: this record was not assembled from a decision")
        return self._engine

    def change(self, t: float) -> Change:
        """This row's decision as a change of size at ``t`` (see ``Change``)."""
        d = self.decision
        return Change(
            t=t,
            action=d.action,
            from_kib=self.actual_kib,
            to_kib=d.target_kib,
            klass=self.klass,
            reason=d.reason,
            rule=d.rule,
            result=d.result,
        )

    def stats_hint(self) -> str | None:
        """What to do about a guest that sends no statistics (the log and `status` say it)."""
        if self.stats != "none":
            return None
        return (
            f"no balloon statistics: if the guest has no statistics period, set one with "
            f"`virsh dommemstat --period 10 --live {self.name}` (a live daemon sets "
            f"stats_period_s itself; a dry run never writes to a guest)"
        )

    @property
    def reclaimed_kib(self) -> int:
        """Memory held back from the guest: its balloon maximum minus its current size."""
        return max(self.max_kib - self.actual_kib, 0)

    @classmethod
    def of(cls, reading: GuestReading, d: Decision, outcome: Outcome) -> GuestRecord:
        """The row of one guest: its reading, the core's decision and act's outcome."""
        sample = reading.sample
        stats: StatsKind = "none"
        if sample.stats:
            stats = "extended" if sample.has_extended else "standard"
        row = cls(
            name=d.guest,
            uuid=sample.uuid,
            actual_kib=sample.actual_kib,
            max_kib=sample.max_kib,
            policy_max_kib=d.max_kib,
            floor_kib=d.floor_kib,
            available_kib=d.available_kib,
            rss_kib=sample.rss_kib,
            klass=d.klass,
            basis=d.basis,
            stats=stats,
            source=reading.source,
            autodeflate=sample.autodeflate,
            free_page_reporting=sample.free_page_reporting,
            decision=DecisionRecord(
                action=d.action,
                target_kib=d.target_kib,
                reason=d.reason,
                rule=d.rule,
                clamped_by=d.clamped_by,
                result=outcome.result,
            ),
        )
        row._sample, row._engine = sample, d
        return row


def assemble_rows(
    readings: Sequence[GuestReading], decisions: Sequence[Decision], outcomes: Sequence[Outcome]
) -> tuple[GuestRecord, ...]:
    """A tick's rows, one per guest: the one place a reading, its decision and its outcome
    meet. The core decides for every sample in the order given, and act answers every decision
    in order, so the three line up; a guest out of place is a bug, not something to join."""
    rows = tuple(
        GuestRecord.of(r, d, o) for r, d, o in zip(readings, decisions, outcomes, strict=True)
    )
    for r, row in zip(readings, rows, strict=True):
        if r.sample.name != row.name:
            raise ValueError(f"decision for {row.name} where {r.sample.name} was read")
    return rows


class Change(ReportValue):
    """A guest's decision as a change of size, ``from_kib`` -> ``to_kib``: the status file's
    ``last_action`` and the fields of a log line about a decision (docs/operations.md), which
    spell the row's ``actual_kib`` and ``target_kib`` so. Built by ``GuestRecord.change``."""

    t: float
    action: Action
    from_kib: int
    to_kib: int
    klass: PressureClass = Field(
        validation_alias=AliasChoices("class", "klass"), serialization_alias="class"
    )
    reason: str
    rule: str = ""
    result: str | None = None


def reclaimed_kib(guests: Iterable[GuestRecord]) -> int:
    """What the host holds back from these guests, summed (the status file's ``reclaimed_kib``,
    the metric ``autoballoon_reclaimed_memory_bytes``)."""
    return sum(g.reclaimed_kib for g in guests)


@dataclass(frozen=True, slots=True)
class Health:
    """The loop's own state when a tick is published: what `status` and the metrics show."""

    ticks: int = 0
    """Ticks completed (observe, decide, act)."""
    failed_ticks: int = 0
    """Ticks skipped because the host could not be read (no decision made)."""
    overruns: int = 0
    """Ticks dropped because the previous one was still running."""
    hypervisor_errors: int | None = None
    """Hypervisor calls that failed for one guest; None when the backend does not count them."""
    hypervisor_reconnects: int | None = None
    """Times the connection to the hypervisor was re-established; None when not counted."""


@dataclass(frozen=True)
class TickReport:
    """What one tick saw, decided and did: the input of every sink (log, status, metrics...)."""

    t: float
    duration_s: float
    dry_run: bool
    host: HostSample | None
    guests: tuple[GuestRecord, ...] = ()
    """One row per guest controlled this tick (``assemble_rows``), in the order read."""
    skipped: Mapping[str, str] = field(default_factory=dict)
    """Guests seen but not controlled this tick, and why."""
    host_verdict: HostVerdict | None = None
    """The on-demand host's situation after this tick (``EngineState.host_verdict``): None
    while the host is above its reserve and its guests fit in it, else what is done."""
    error: str | None = None
    """Set when the whole tick failed (libvirt unreachable): no decisions were made."""
    policies: PolicySet | None = None
    """The policies this tick decided with (None when the producer does not say): the trace
    records them when a reload changes them."""

    @property
    def reclaimed_kib(self) -> int:
        """What the host holds back from this tick's guests (see ``reclaimed_kib``)."""
        return reclaimed_kib(self.guests)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """The core's decisions, one per row, in the rows' order."""
        return tuple(g.engine_decision for g in self.guests)

    @property
    def failed(self) -> tuple[GuestRecord, ...]:
        """The rows whose change was decided and not made."""
        return tuple(g for g in self.guests if g.decision.failed)


class Sink(Protocol):
    """Where a tick's report goes. Must not raise into the loop (the loop logs and goes on)."""

    def on_tick(self, report: TickReport, health: Health) -> None: ...

    def close(self) -> None: ...
