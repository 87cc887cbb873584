"""The report values: anything that produces a tick can feed the daemon's sinks.

A recorded lab trace is replayed through the production engine and its ticks, as report values,
go to the same log, status, metrics and trace sinks the daemon runs with; and the rule that made
a decision reaches the log (human and JSON), the status file and the trace.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from autoballoon.act import DryRunActuator
from autoballoon.commands.status_command import EXIT_RUNNING, Verdict, render
from autoballoon.core.classify import Basis, PressureClass
from autoballoon.core.decide import Action, Decision
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.samples import HostSample
from autoballoon.logs import JsonFormatter
from autoballoon.metrics import MetricsSink
from autoballoon.replay import Replayer
from autoballoon.report import DONE, GuestReading, Health, TickReport, assemble_rows
from autoballoon.sinks import LogSink, TraceSink
from autoballoon.status import StatusDocument, StatusSink
from autoballoon.trace import RecordedTick, TraceReader, read_trace
from tests.factories import sample

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RUNNING = Verdict("running", "replayed", EXIT_RUNNING)


def tick_report(tick: RecordedTick, decisions: list[Decision]) -> TickReport:
    """A replayed tick as the report values every sink takes (a dry run: nothing applied);
    what a trace does not record (stats source, RSS, skipped guests) stays empty."""
    return TickReport(
        t=tick.t,
        duration_s=0.0,
        dry_run=True,
        host=tick.host,
        guests=assemble_rows(
            [GuestReading(tick.samples[d.guest]) for d in decisions],
            decisions,
            DryRunActuator().apply(decisions),
        ),
    )


def test_a_replayed_trace_feeds_the_daemons_sinks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    replayer = Replayer(PolicySet(GuestPolicy(mode="proactive")))
    log, status = LogSink(), StatusSink(tmp_path / "status.json", uri="replay")
    metrics, recording = MetricsSink(), TraceSink(tmp_path / "again.jsonl", 2.0)
    changes = []
    caplog.set_level(logging.INFO, logger="autoballoon")
    with TraceReader(FIXTURES / "lab-oom.jsonl") as reader:
        for n, tick in enumerate(reader, 1):
            decisions = replayer.feed(tick)
            changes += [d for d in decisions if d.action is not Action.HOLD]
            report = tick_report(tick, decisions)
            for sink in (log, status, metrics, recording):
                sink.on_tick(report, Health(ticks=n))
    for sink in (log, status, metrics, recording):
        sink.close()

    assert changes, "the trace makes the engine act (else this test shows nothing)"
    actions = [
        r
        for r in caplog.records
        if "[dry-run] guest" in r.getMessage() and ": hold " not in r.getMessage()
    ]
    assert len(actions) == len(changes)
    doc = StatusDocument.model_validate_json((tmp_path / "status.json").read_text())
    assert doc.ticks == n and doc.state == "stopped" and doc.mode == "dry-run"
    assert {g.name for g in doc.guests} == set(tick.samples)
    last = {g.name: g.last_action for g in doc.guests}
    for d in changes:  # the last change of each guest is the one the status shows
        shown = last[d.guest]
        assert shown is not None
        if shown.t == d.t:
            assert (shown.action, shown.to_kib, shown.result) == (d.action, d.target_kib, "dry-run")
    assert "held back:" in render(doc, RUNNING, doc.updated_at)
    text = generate_latest(metrics.registry).decode()
    assert f"autoballoon_ticks_total {float(n)}" in text
    for name in tick.samples:
        assert f'autoballoon_guest_balloon_bytes{{domain="{name}"}}' in text
    recorded = [(name, d.action, d.target_kib) for t in read_trace(tmp_path / "again.jsonl")[1]
                for name, d in t.decisions.items() if d.action is not Action.HOLD]  # fmt: skip
    assert recorded == [(d.guest, d.action, d.target_kib) for d in changes]


def test_the_rule_reaches_the_log_the_status_and_the_trace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = sample(100.0, name="web-1", oom=1)
    rescue = Decision(
        guest="web-1",
        t=100.0,
        current_kib=s.actual_kib,
        target_kib=s.actual_kib + (256 << 10),
        action=Action.DEFLATE,
        klass=PressureClass.OOM,
        basis=Basis.EXTENDED,
        reason="oom: 1 kill",
        floor_kib=256 << 10,
        max_kib=s.max_kib,
        rule="rescue",
    )
    report = TickReport(
        t=100.0,
        duration_s=0.01,
        dry_run=False,
        host=None,
        guests=assemble_rows([GuestReading(s, "qmp")], [rescue], [DONE]),
    )
    caplog.set_level(logging.INFO, logger="autoballoon")
    LogSink().on_tick(report, Health(ticks=1))
    (line,) = [r for r in caplog.records if "guest web-1: deflate" in r.getMessage()]
    assert line.getMessage().endswith("oom: 1 kill [rule rescue]")
    assert json.loads(JsonFormatter().format(line))["rule"] == "rescue"

    status = StatusSink(tmp_path / "status.json")
    status.on_tick(report, Health(ticks=1))
    doc = StatusDocument.model_validate_json(status.path.read_text())
    (g,) = doc.guests
    assert g.decision.rule == "rescue" and g.last_action is not None
    assert g.last_action.rule == "rescue" and g.last_action.result == "applied"
    assert "oom: 1 kill [rule rescue]" in render(doc, RUNNING, 100.0)

    with_host = replace(report, host=HostSample(100.0, 24 << 20, 20 << 20, None, None))
    recording = TraceSink(tmp_path / "t.jsonl", 5.0)
    recording.on_tick(with_host, Health(ticks=1))
    recording.close()
    (tick,) = read_trace(tmp_path / "t.jsonl")[1]
    assert tick.decisions["web-1"].rule == "rescue"
