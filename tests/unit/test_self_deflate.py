"""A guest with deflate-on-OOM that deflated itself is a guest in trouble, not an operator's
resize: the engine adopts its new size, blocks inflation and never goes below that size."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from autoballoon.backends.libvirt import LibvirtHypervisor
from autoballoon.commands.status_command import EXIT_RUNNING, Verdict, render
from autoballoon.core.decide import Action, Decision, EngineState, step
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.samples import GuestSample, HostSample
from autoballoon.logs import JsonFormatter
from autoballoon.observe import GuestScope
from autoballoon.qmp import Balloon, parse_balloon
from autoballoon.report import HELD, GuestReading, Health, TickReport, assemble_rows
from autoballoon.sinks import LogSink
from autoballoon.status import StatusDocument, StatusSink
from autoballoon.trace import TraceWriter, read_trace, tick_record
from tests.factories import sample

POLICY = GuestPolicy(mode="proactive")
PROACTIVE = PolicySet(POLICY)
HOST_OK = HostSample(0, mem_total_kib=24 << 20, mem_available_kib=20 << 20)
MIB = 1024


@dataclass
class Guest:
    """A closed-loop guest (the balloon follows targets), with or without deflate-on-OOM."""

    autodeflate: bool
    used_mib: int = 100
    max_mib: int = 1024
    actual_mib: int = 1024
    counters: dict[str, float] = field(default_factory=dict)

    def read(self, t: float) -> GuestSample:
        s = sample(
            t,
            actual_mib=self.actual_mib,
            max_mib=self.max_mib,
            avail_mib=max(self.actual_mib - self.used_mib, 0),
            **self.counters,  # type: ignore[arg-type]
        )
        return replace(s, autodeflate=self.autodeflate)


class Run:
    def __init__(self, guest: Guest) -> None:
        self.g = guest
        self.state = EngineState()
        self.now = 1000.0

    def ticks(self, n: int) -> list[Decision]:
        out = []
        for _ in range(n):
            self.now += 2
            (d,), self.state = step(
                self.now, HOST_OK, {"vm": self.g.read(self.now)}, self.state, PROACTIVE
            )
            out.append(d)
            if d.action is not Action.HOLD:
                self.g.actual_mib = d.target_kib // MIB
        return out


def settled(autodeflate: bool) -> Run:
    """A guest inflated by the engine until it holds (100 MiB used of 1 GiB)."""
    run = Run(Guest(autodeflate))
    run.ticks(150)
    assert run.g.actual_mib < 400  # inflated well below its maximum
    assert run.ticks(5)[-1].action is Action.HOLD
    return run


def test_a_self_deflate_is_adopted_and_blocks_inflation_for_pressure_block_s() -> None:
    run = settled(autodeflate=True)
    before = run.g.actual_mib
    run.g.used_mib += 120  # a burst; the guest takes 100 MiB of balloon back, before OOM
    run.g.actual_mib = before + 100
    (d,) = run.ticks(1)
    assert d.rule == "self-deflated"
    assert d.action is Action.HOLD  # the new size is kept: never pushed back
    assert "deflated itself (deflate-on-OOM)" in d.reason
    assert f"from {before} to {before + 100} MiB" in d.reason
    run.g.used_mib -= 120  # the burst is over: plenty spare again
    block_ticks = int(POLICY.pressure_block_s / 2)
    during = run.ticks(block_ticks - 2)
    assert all(x.action is Action.HOLD for x in during)
    assert not any("someone else" in x.reason for x in during)
    assert any("blocked after the guest deflated itself" in x.reason for x in during)
    after = run.ticks(30)
    taken = [x for x in after if x.action is Action.INFLATE]
    assert taken, "inflation resumes once pressure_block_s is over (no operator hold)"
    assert taken[0].target_kib < (before + 100) * MIB


def test_without_autodeflate_growth_is_still_an_operator_resize() -> None:
    run = settled(autodeflate=False)
    run.g.actual_mib += 100
    held = run.ticks(int(POLICY.pressure_block_s / 2) + 10)
    assert all(d.action is Action.HOLD for d in held)
    assert any("resized by someone else" in d.reason for d in held)
    assert not any(d.rule == "self-deflated" for d in held)


def test_an_inflation_by_someone_else_is_an_operator_resize_even_with_autodeflate() -> None:
    run = settled(autodeflate=True)
    run.g.actual_mib -= 50  # virsh setmem lower: the guest never inflates by itself
    held = run.ticks(10)
    assert any("resized by someone else" in d.reason for d in held)
    assert not any(d.rule == "self-deflated" for d in held)


def test_a_self_deflate_in_small_steps_is_seen_once_it_adds_up() -> None:
    run = settled(autodeflate=True)
    before = run.g.actual_mib
    tol = POLICY.min_change_mib
    seen: list[Decision] = []
    for _ in range(tol + 2):  # 1 MiB per tick, as the driver's OOM notifier gives it back
        run.g.actual_mib += 1
        run.g.used_mib += 1  # to the allocation that was about to fail
        seen += run.ticks(1)
    rules = [d.rule for d in seen]
    assert "self-deflated" in rules
    assert "stalled-inflation" not in rules
    assert all(d.action is not Action.INFLATE for d in seen)
    assert run.g.actual_mib >= before + tol


def test_a_self_deflated_guest_still_in_trouble_is_rescued_at_once() -> None:
    run = settled(autodeflate=True)
    before = run.g.actual_mib
    run.g.used_mib += 300
    run.g.actual_mib = before + 40
    run.g.counters = {"oom": 1, "stalls": 40, "dscan_mib": 60, "drclm_mib": 5}
    (d,) = run.ticks(1)
    assert d.rule == "self-deflated"
    assert d.action is Action.DEFLATE and d.target_kib > (before + 40) * MIB
    assert "deflated itself" in d.reason and "oom" in d.reason


def test_replay_is_open_loop_and_never_sees_a_self_deflate() -> None:
    g = Guest(autodeflate=True, actual_mib=400)
    state = EngineState()
    for i, size in enumerate((400, 400, 500, 500)):
        g.actual_mib = size
        now = 1000.0 + 2 * i
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE, open_loop=True)
        assert d.rule != "self-deflated"


# --- the flags on their way in: the adapter and the trace ------------------------------------

BALLOON_XML = (
    "<domain type='test'><name>{name}</name><memory unit='MiB'>512</memory>"
    "<currentMemory unit='MiB'>512</currentMemory><os><type>hvm</type></os><devices>"
    "<memballoon model='virtio'{attrs}><stats period='1'/></memballoon></devices></domain>"
)


def test_balloon_options_are_read_from_the_domain_xml() -> None:
    on = BALLOON_XML.format(name="a", attrs=" autodeflate='on' freePageReporting='on'")
    assert parse_balloon(on) == Balloon("", 1, autodeflate=True, free_page_reporting=True)
    off = BALLOON_XML.format(name="a", attrs=" autodeflate='off'")
    assert parse_balloon(off) == Balloon("", 1, autodeflate=False, free_page_reporting=False)
    assert parse_balloon("<domain><devices/></domain>") is None


def test_the_adapter_carries_the_flags_cached_per_running_instance() -> None:
    hv = LibvirtHypervisor("test:///default")  # per-connection state: our domains only
    try:
        conn = hv.connection.live()
        xml = BALLOON_XML.format(name="ad", attrs=" autodeflate='on'")
        conn.createXML(xml, 0)
        (g,) = [x for x in hv.read(GuestScope()).guests if x.name == "ad"]
        assert g.autodeflate and not g.free_page_reporting
        (info,) = [i for (uuid, _id), i in hv.reader.info.items() if i.autodeflate]
        read_at = info.xml_read_at
        hv.read(GuestScope())
        assert info.xml_read_at == read_at  # not re-read every tick
        conn.lookupByName("ad").destroy()  # restarted without deflate-on-OOM: a new instance
        conn.createXML(BALLOON_XML.format(name="ad", attrs=""), 0)
        (g,) = [x for x in hv.read(GuestScope()).guests if x.name == "ad"]
        assert not g.autodeflate
    finally:
        hv.close()


def test_the_trace_keeps_the_flags_and_older_traces_read_as_off(tmp_path: Path) -> None:
    host = HostSample(5.0, 1 << 20, 1 << 19)
    on = replace(sample(5.0, name="on"), autodeflate=True, free_page_reporting=True)
    off = sample(5.0, name="off")
    rec = tick_record(5.0, host, {"on": on, "off": off})
    assert rec["guests"]["on"]["autodeflate"] is True
    assert "autodeflate" not in rec["guests"]["off"]  # as traces written before the flags
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, 2.0, "h") as w:
        w.write_tick(5.0, host, {"on": on, "off": off})
    _header, ticks = read_trace(path)
    (tick,) = list(ticks)
    assert tick.samples["on"].autodeflate and tick.samples["on"].free_page_reporting
    assert not tick.samples["off"].autodeflate and not tick.samples["off"].free_page_reporting


def self_deflate_report(run: Run, others: Sequence[Decision] = ()) -> TickReport:
    """The tick at which the settled guest of ``run`` deflated itself by 60 MiB (the run's own
    engine state is left before it); ``others``: plain decisions of other guests to add."""
    run.g.actual_mib += 60
    run.g.used_mib += 60  # taken at once by the allocation that was about to fail
    samples = {"vm": run.g.read(run.now + 2)}
    decisions, _state = step(run.now + 2, HOST_OK, samples, run.state, PROACTIVE)
    readings = [GuestReading(samples["vm"], "qmp")]
    readings += [GuestReading(replace(samples["vm"], name=d.guest)) for d in others]
    decisions += others
    return TickReport(
        t=run.now,
        duration_s=0.01,
        dry_run=False,
        host=HOST_OK,
        guests=assemble_rows(readings, decisions, [HELD] * len(decisions)),
    )


def test_a_self_deflate_gets_a_log_line_other_holds_do_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = settled(autodeflate=True)
    quiet = run.ticks(1)[0]
    assert quiet.action is Action.HOLD and quiet.rule != "self-deflated"
    report = self_deflate_report(run, [quiet._replace(guest="other")])
    caplog.set_level(logging.INFO, logger="autoballoon")
    LogSink().on_tick(report, Health(ticks=1))
    lines = [r for r in caplog.records if ": hold " in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    fields = json.loads(JsonFormatter().format(lines[0]))
    assert fields["rule"] == "self-deflated" and fields["action"] == "hold"
    assert fields["guest"] == "vm" and "FAILED" not in fields["msg"]


def test_the_status_file_shows_the_flag_and_the_self_deflate_as_last_action(
    tmp_path: Path,
) -> None:
    run = settled(autodeflate=True)
    report = self_deflate_report(run)
    sink = StatusSink(tmp_path / "status.json")
    sink.on_tick(report, Health(ticks=1))
    doc = StatusDocument.model_validate_json(sink.path.read_text())
    (g,) = doc.guests
    assert g.autodeflate and not g.free_page_reporting
    assert g.last_action is not None and g.last_action.rule == "self-deflated"
    text = render(doc, Verdict("running", "test", EXIT_RUNNING), run.now)
    assert "extended autodeflate" in text and "[rule self-deflated]" in text
