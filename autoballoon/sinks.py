"""Sinks: what happens to a tick's report (the log, trace recording); see also ``status`` and
``metrics``.

Sits after act, below the loop. Each sink takes the report values of ``autoballoon.report``
(never the controller) and must not raise into the loop (the loop logs and ignores a failing
sink). The `run` command chooses which sinks the daemon gets.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from autoballoon.core.decide import Action
from autoballoon.core.policy import PolicySet
from autoballoon.core.state import HostVerdict, Verdict
from autoballoon.core.units import KIB_PER_MIB
from autoballoon.report import GuestRecord, Health, TickReport
from autoballoon.trace import RecordedRun, TraceWriter

log = logging.getLogger("autoballoon")


def _action_fields(r: GuestRecord, result: str, dry_run: bool) -> dict[str, object]:
    """A decision's JSON log fields (docs/operations.md, the log format): the row's change
    (``GuestRecord.change``) with the guest, the result as a string and the dry-run flag."""
    fields: dict[str, object] = r.change(0.0).to_json()
    del fields["t"]
    return fields | {"guest": r.name, "result": result, "dry_run": dry_run}


class LogSink:
    """One line per action (guest, class, from, to, reason, rule) and per class change.

    In a dry run, also one line per guest whenever what holds it changes (its class or the rule
    that holds it), and at its first tick: `run --dry-run --once` shows every guest's class,
    what holds it and why, and the fix for a guest that sends no statistics.

    JSON lines carry the same as fields; their names (``from_kib``, ``to_kib``...) are the
    documented log format (docs/operations.md), taken from the guest's ``GuestRecord``.
    """

    def __init__(self) -> None:
        self._classes: dict[str, str] = {}
        self._sources: dict[str, str] = {}
        self._holds: dict[str, tuple[str, str]] = {}
        self._verdict: Verdict | None = None

    def on_tick(self, report: TickReport, health: Health) -> None:
        if report.error is None:
            self._log_verdict(report.host_verdict)
        for r in report.guests:
            d = r.decision
            before = self._classes.get(r.name)
            if before != r.klass:
                if before is not None:
                    log.info(
                        "guest %s: class %s -> %s (%s)",
                        r.name,
                        before,
                        r.klass,
                        d.reason,
                        extra={
                            "fields": {
                                "guest": r.name,
                                "class": str(r.klass),
                                "previous_class": before,
                            }
                        },
                    )
                self._classes[r.name] = r.klass
            if not d.notable:
                if report.dry_run:
                    self._log_hold(r)
                continue
            self._holds.pop(r.name, None)
            result = d.result or ""
            verb = f"would {d.action}" if report.dry_run else str(d.action)
            failed = f" FAILED ({result})" if d.failed else ""
            if d.action is Action.HOLD:
                verb, failed = "hold", ""
            log.info(
                "%sguest %s: %s %d -> %d MiB [%s] %s%s%s",
                "[dry-run] " if report.dry_run else "",
                r.name,
                verb,
                r.actual_kib // KIB_PER_MIB,
                d.target_kib // KIB_PER_MIB,
                r.klass,
                d.reason,
                f" [rule {d.rule}]" if d.rule else "",
                failed,
                extra={"fields": _action_fields(r, result, report.dry_run)},
            )
        for r in report.guests:
            if r.source is not None and self._sources.get(r.name) != r.source:
                if r.source != "qmp":
                    log.info(
                        "guest %s: no 6.12 pressure counters; controlled from standard "
                        "balloon statistics",
                        r.name,
                    )
                self._sources[r.name] = r.source
        seen = {r.name for r in report.guests}
        for name in set(self._classes) - seen - set(report.skipped):
            if report.error is None:
                self._classes.pop(name, None)
                self._sources.pop(name, None)
                self._holds.pop(name, None)

    def _log_hold(self, r: GuestRecord) -> None:
        """A dry run's hold, when its class or rule differs from the guest's last one logged."""
        d = r.decision
        key = (str(r.klass), d.rule)
        if self._holds.get(r.name) == key:
            return
        self._holds[r.name] = key
        hint = r.stats_hint()
        log.info(
            "[dry-run] guest %s: hold %d MiB [%s] %s%s%s",
            r.name,
            r.actual_kib // KIB_PER_MIB,
            r.klass,
            d.reason,
            f" [rule {d.rule}]" if d.rule else "",
            f"; {hint}" if hint else "",
            extra={"fields": _action_fields(r, "", True)},
        )

    def _log_verdict(self, verdict: HostVerdict | None) -> None:
        """The host verdict when it appears, changes in kind, or clears; not every tick.

        Its figures move a little every tick (the host's MemAvailable does); a change of
        figures alone is not news, a change of what is done about the host is.
        """
        kind = None if verdict is None else verdict.kind
        if kind == self._verdict:
            return
        if verdict is None:
            fitted = self._verdict in (Verdict.FITTING, Verdict.OVERCOMMITTED)
            log.info(
                "guests fit in what the host can give" if fitted else "host back above its reserve",
                extra={"fields": {"host_verdict": None, "host_verdict_kind": None}},
            )
        else:
            level = logging.WARNING if verdict.stuck else logging.INFO
            fields = {"host_verdict": verdict.text, "host_verdict_kind": str(verdict.kind)}
            log.log(level, "%s", verdict.text, extra={"fields": fields})
        self._verdict = kind

    def close(self) -> None:
        pass


class TraceSink:
    """`run --record FILE`: appends every tick to a trace (docs/trace-format.md).

    ``policies`` and ``dry_run`` are the daemon's at start, recorded so that a replay decides
    as the daemon did; a tick whose report carries other policies (a reload) records them.
    """

    def __init__(
        self,
        path: Path,
        interval_s: float,
        policies: PolicySet | None = None,
        dry_run: bool | None = None,
    ) -> None:
        run = RecordedRun(policies, dry_run)
        self.writer = TraceWriter(path, interval_s, socket.gethostname(), run=run)
        self._policies = policies
        self._last_t = float("-inf")

    def on_tick(self, report: TickReport, health: Health) -> None:
        if report.host is None:
            return
        if report.t < self._last_t:
            # Traces go forward in time; a host clock stepping back would make it unreadable.
            log.warning("clock went back %.1f s: tick not recorded", self._last_t - report.t)
            return
        self._last_t = report.t
        changed = None
        if report.policies is not None and report.policies != self._policies:
            changed = self._policies = report.policies
        self.writer.write_rows(report.t, report.host, report.guests, changed, now=report.host.t)

    def close(self) -> None:
        self.writer.close()
