"""The on-demand host verdict reaches the log (when it changes, not every tick) and `status`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from autoballoon.commands.status_command import EXIT_RUNNING, Verdict, render
from autoballoon.core.samples import HostSample
from autoballoon.logs import JsonFormatter
from autoballoon.report import Health, TickReport
from autoballoon.sinks import LogSink
from autoballoon.status import StatusDocument, StatusSink

CANNOT = "ballooning cannot free more: guests' spare pages are untouched"
VERDICTS = [
    None,
    "host short by 100 MiB; asking guests for 100 MiB",
    "host short by 101 MiB; waiting for 100 MiB asked of guests to reach the host",
    "host short by 99 MiB; waiting for 100 MiB asked of guests to reach the host",
    f"host short by 100 MiB; {CANNOT}",
    f"host short by 102 MiB; {CANNOT}",
    f"host short by 100 MiB; {CANNOT}",
    None,
    None,
]


def report(verdict: str | None, error: str | None = None) -> TickReport:
    host = HostSample(0.0, 4 << 20, 1 << 20)
    return TickReport(1e9, 0.01, False, host, host_verdict=verdict, error=error)


def test_the_log_says_it_once_per_change_of_what_is_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="autoballoon")
    sink = LogSink()
    for n, v in enumerate(VERDICTS, 1):
        sink.on_tick(report(v), Health(ticks=n))
        if v is not None:  # a failed tick says nothing about the host
            sink.on_tick(report(None, error="libvirt unreachable"), Health(ticks=n))
    lines = [r for r in caplog.records if "host" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        VERDICTS[1],
        VERDICTS[2],
        VERDICTS[4],
        "host back above its reserve",
    ]
    assert [r.levelname for r in lines] == ["INFO", "INFO", "WARNING", "INFO"]
    assert json.loads(JsonFormatter().format(lines[2]))["host_verdict"] == VERDICTS[4]


def test_status_shows_it_typed_and_in_words(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    sink = StatusSink(path)
    sink.on_tick(report(VERDICTS[4]), Health(ticks=1))
    doc = StatusDocument.model_validate_json(path.read_text())
    assert doc.host is not None and doc.host.verdict == VERDICTS[4]
    assert json.loads(path.read_text())["host"]["verdict"] == VERDICTS[4]
    text = render(doc, Verdict("running", "running", EXIT_RUNNING), doc.updated_at)
    assert f"on-demand: {VERDICTS[4]}\n" in text

    sink.on_tick(report(VERDICTS[4], error="libvirt unreachable"), Health(ticks=2))
    doc = StatusDocument.model_validate_json(path.read_text())
    assert doc.host is not None and doc.host.verdict == VERDICTS[4]  # the last good tick's

    sink.on_tick(report(None), Health(ticks=3))
    doc = StatusDocument.model_validate_json(path.read_text())
    assert doc.host is not None and doc.host.verdict is None
    text = render(doc, Verdict("running", "running", EXIT_RUNNING), doc.updated_at)
    assert "on-demand:" not in text
