"""The report values: what one tick saw, decided and did, and how the loop is doing.

Sits below the daemon and below every sink, above the pure core. The daemon builds these values
once per tick; the sinks (log, status file, metrics, trace) read them and nothing else. Replay
builds the same values from a recorded trace, so anything that can produce a tick can feed any
sink. Nothing here reads a clock, talks to a hypervisor or knows a controller: values only.

Three values:

- ``TickReport``: one tick's inputs (host and guest samples), decisions and their results.
- ``Health``: the loop's own counters (ticks, failures, overruns, hypervisor trouble), frozen
  when the tick is published, in words that do not depend on the backend.
- ``GuestRecord``: one guest at one tick, typed, with one serializer (``to_json``). The status
  file's guest rows are these records and the trace's per-guest ``decision`` is its
  ``DecisionRecord``; the log and the metrics read their attributes.

The names around a tick, from the edge inwards: ``hypervisor.Reading`` is what the backend
returned (raw, untrusted); ``observe.Observation`` is that reading sanitised into the core's
samples, plus what the loop needs to report (skipped guests, stats source, RSS);
``trace.RecordedTick`` is the part of an observation a trace keeps (the engine's inputs, and the
decisions taken live). ``TickReport`` is an observation with the decisions and their results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from autoballoon.core.classify import Basis, PressureClass
from autoballoon.core.decide import Action, Decision
from autoballoon.core.policy import PolicySet
from autoballoon.core.samples import GuestSample, HostSample

StatsKind = Literal["extended", "standard", "none"]


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
    def of(
        cls,
        sample: GuestSample,
        d: Decision,
        *,
        source: str | None,
        rss_kib: int | None,
        result: str | None,
    ) -> GuestRecord:
        stats: StatsKind = "none"
        if sample.stats:
            stats = "extended" if sample.has_extended else "standard"
        return cls(
            name=d.guest,
            uuid=sample.uuid,
            actual_kib=sample.actual_kib,
            max_kib=sample.max_kib,
            policy_max_kib=d.max_kib,
            floor_kib=d.floor_kib,
            available_kib=d.available_kib,
            rss_kib=rss_kib,
            klass=d.klass,
            basis=d.basis,
            stats=stats,
            source=source,
            autodeflate=sample.autodeflate,
            free_page_reporting=sample.free_page_reporting,
            decision=DecisionRecord(
                action=d.action,
                target_kib=d.target_kib,
                reason=d.reason,
                rule=d.rule,
                clamped_by=d.clamped_by,
                result=result,
            ),
        )


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
    samples: Mapping[str, GuestSample]
    decisions: Sequence[Decision]
    results: Mapping[str, str]
    """Per guest acted upon: "applied", "dry-run" or an error message."""
    skipped: Mapping[str, str]
    """Guests seen but not controlled this tick, and why."""
    sources: Mapping[str, str]
    """Per guest: "qmp" (6.12 counters) or "libvirt" (standard statistics only)."""
    rss_kib: Mapping[str, int] = field(default_factory=dict)
    host_verdict: str | None = None
    """The on-demand host's situation after this tick (``EngineState.host_verdict``): None
    while the host is above its reserve, else "host short by N MiB; " and what is done."""
    error: str | None = None
    """Set when the whole tick failed (libvirt unreachable): no decisions were made."""
    policies: PolicySet | None = None
    """The policies this tick decided with (None when the producer does not say): the trace
    records them when a reload changes them."""

    @cached_property
    def guests(self) -> tuple[GuestRecord, ...]:
        """One record per decision, in the decisions' order (built once, on first use)."""
        return tuple(
            GuestRecord.of(
                self.samples[d.guest],
                d,
                source=self.sources.get(d.guest),
                rss_kib=self.rss_kib.get(d.guest),
                result=self.results.get(d.guest),
            )
            for d in self.decisions
        )


class Sink(Protocol):
    """Where a tick's report goes. Must not raise into the loop (the loop logs and goes on)."""

    def on_tick(self, report: TickReport, health: Health) -> None: ...

    def close(self) -> None: ...
