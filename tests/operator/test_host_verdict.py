"""The on-demand host verdict reaches the log (when it changes, not every tick) and `status`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from autoballoon.commands.status_command import EXIT_RUNNING, Verdict, render
from autoballoon.core.samples import HostSample
from autoballoon.core.state import HostVerdict
from autoballoon.core.state import Verdict as HV
from autoballoon.logs import JsonFormatter
from autoballoon.report import Health, TickReport
from autoballoon.sinks import LogSink
from autoballoon.status import StatusDocument, StatusSink

CANNOT = "ballooning cannot free more: guests' spare pages are untouched"
MIB = 1024
VERDICTS: list[HostVerdict | None] = [
    None,
    HostVerdict(HV.ASKING, 100 * MIB, 100 * MIB),
    HostVerdict(HV.WAITING, 101 * MIB, 100 * MIB),
    HostVerdict(HV.WAITING, 99 * MIB, 100 * MIB),
    HostVerdict(HV.UNTOUCHED, 100 * MIB),
    HostVerdict(HV.UNTOUCHED, 102 * MIB),
    HostVerdict(HV.UNTOUCHED, 100 * MIB),
    None,
    None,
]
WORDS = [
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


def test_each_verdict_reads_as_its_sentence() -> None:
    assert [v and v.text for v in VERDICTS] == WORDS
    assert [v is not None and v.stuck for v in VERDICTS] == [
        False, False, False, False, True, True, True, False, False
    ]
    fit = HostVerdict(HV.FITTING, -300 * MIB, 200 * MIB, 500 * MIB, 300 * MIB)
    assert fit.text == (
        "guests could grow into 500 MiB, the host can give 300 MiB above its reserve; "
        "taking 200 MiB of their free memory"
    )
    assert not fit.stuck
    over = HostVerdict(HV.OVERCOMMITTED, -300 * MIB, 0, 500 * MIB, 300 * MIB)
    assert over.stuck and over.text.endswith("no guest has free memory to spare")


def report(verdict: HostVerdict | None, error: str | None = None) -> TickReport:
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
        WORDS[1],
        WORDS[2],
        WORDS[4],
        "host back above its reserve",
    ]
    assert [r.levelname for r in lines] == ["INFO", "INFO", "WARNING", "INFO"]
    fields = json.loads(JsonFormatter().format(lines[2]))
    assert (fields["host_verdict"], fields["host_verdict_kind"]) == (WORDS[4], "untouched")


def test_status_shows_it_typed_and_in_words(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    sink = StatusSink(path)
    sink.on_tick(report(VERDICTS[4]), Health(ticks=1))
    doc = StatusDocument.model_validate_json(path.read_text())
    assert doc.host is not None and doc.host.verdict == WORDS[4]
    assert doc.host.verdict_kind == "untouched"
    assert json.loads(path.read_text())["host"]["verdict"] == WORDS[4]
    text = render(doc, Verdict("running", "running", EXIT_RUNNING), doc.updated_at)
    assert f"on-demand: {WORDS[4]}\n" in text

    sink.on_tick(report(VERDICTS[4], error="libvirt unreachable"), Health(ticks=2))
    doc = StatusDocument.model_validate_json(path.read_text())
    assert doc.host is not None and doc.host.verdict == WORDS[4]  # the last good tick's

    sink.on_tick(report(None), Health(ticks=3))
    doc = StatusDocument.model_validate_json(path.read_text())
    assert doc.host is not None and doc.host.verdict is None and doc.host.verdict_kind is None
    text = render(doc, Verdict("running", "running", EXIT_RUNNING), doc.updated_at)
    assert "on-demand:" not in text
