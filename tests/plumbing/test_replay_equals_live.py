"""Replay must equal live: the daemon on libvirt's test driver records a trace, and
`autoballoon replay TRACE` (no --policies: the recorded ones) gives the decisions it took.

Two guests of test:///default: its own "test" (statistics every 10 s) and one created here that
reports every 60 s. Their statistics never move and their last-update is a fixed date, so the
wall clock handed to the controller decides how old each report is: fresh at first (a calm
guest, inflated under proactive), then stale after its own period (given memory back). The
monotonic clock the core runs on drifts from the wall clock, as real clocks do. A reload
changes the policies half way; a second run appends to the same trace, dry-run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from autoballoon.backends.libvirt import LibvirtHypervisor
from autoballoon.cli import main
from autoballoon.config import DaemonConfig
from autoballoon.core.policy import GuestPolicy, Match, PolicyLayer, PolicySet
from autoballoon.daemon import Controller
from autoballoon.report import TickReport
from autoballoon.sinks import TraceSink

URI = "test:///default"
SLOW = "ab-slow"
SLOW_XML = f"""
<domain type='test'>
  <name>{SLOW}</name>
  <memory unit='MiB'>4096</memory>
  <currentMemory unit='MiB'>3072</currentMemory>
  <os><type arch='i686'>hvm</type></os>
  <devices><memballoon model='virtio'><stats period='60'/></memballoon></devices>
</domain>
"""
INTERVAL_S = 5.0
TICKS = 40
KEYS = ("t", "guest", "class", "action", "current_kib", "target_kib", "rule", "reason")

POLICIES = PolicySet(
    GuestPolicy(mode="proactive", stable_s=10.0, cooldown_s=6.0),
    layers=(PolicyLayer("slow.toml", Match(names=(SLOW,)), {"inflate_step_ratio": 0.05}),),
)
RELOADED = PolicySet(GuestPolicy(mode="proactive", stable_s=15.0, headroom_mib=256))


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    """A connection held for the whole test (test:///default lives as long as one is open),
    with the 60 s guest running beside the driver's own."""
    c = libvirt.open(URI)
    dom = c.createXML(SLOW_XML, 0)
    try:
        yield c
    finally:
        dom.destroy()
        c.close()


def last_update(conn: libvirt.virConnect) -> int:
    return int(conn.lookupByName("test").memoryStats()["last_update"])


def record(
    trace: Path, start_wall: float, *, dry_run: bool, ticks: int = TICKS, reload_at: int = -1
) -> list[TickReport]:
    """One daemon run, recording: the real controller, adapter and sink on the test driver."""
    walls = iter(start_wall + INTERVAL_S * i for i in range(ticks))
    # The core's clock: its own origin, and a rate that drifts from the wall clock's.
    monos = iter(7000.0 + INTERVAL_S * i * 1.0003 for i in range(ticks))
    config = DaemonConfig(uri=URI, interval_s=INTERVAL_S, status_file=trace.with_suffix(".s"))
    hv = LibvirtHypervisor(URI)
    sink = TraceSink(trace, INTERVAL_S, POLICIES, dry_run)
    ctl = Controller(
        config,
        hv,
        POLICIES,
        dry_run=dry_run,
        sinks=[sink],
        clock=lambda: next(walls),
        monotonic=lambda: next(monos),
    )
    reports = []
    for i in range(ticks):
        if i == reload_at:
            ctl.policies = RELOADED  # what a SIGHUP reload does between two ticks
        reports.append(ctl.tick())
    ctl.finish()
    hv.close()
    return reports


def live_decisions(reports: list[TickReport]) -> list[dict[str, Any]]:
    """The decisions as `replay --json` writes them, stamped with the tick's wall clock."""
    out = []
    for r in reports:
        for g in sorted(r.guests, key=lambda g: g.name):
            d = g.decision
            out.append(
                {"t": r.t, "guest": g.name, "class": str(g.klass), "action": str(d.action),
                 "current_kib": g.actual_kib, "target_kib": d.target_kib, "rule": d.rule,
                 "reason": d.reason}
            )  # fmt: skip
    return out


def replayed(capsys: pytest.CaptureFixture[str], trace: Path, *args: str) -> list[dict[str, Any]]:
    code = main(["replay", str(trace), "--json", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    *lines, _summary = (json.loads(x) for x in out.splitlines())
    return [{k: x[k] for k in KEYS} for x in lines]


def test_replaying_a_live_run_gives_its_decisions(
    conn: libvirt.virConnect, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "live.jsonl"
    reports = record(trace, last_update(conn) + 2.0, dry_run=False, reload_at=TICKS // 2)
    live = live_decisions(reports)
    changes = [d for d in live if d["action"] != "hold"]
    rules = {d["rule"] for d in changes}
    # Not vacuous: both guests were resized, both ways, by several rules.
    assert {d["guest"] for d in changes} == {"test", SLOW}
    assert {d["action"] for d in changes} == {"inflate", "deflate"}
    assert {"take-proactive", "stale"} <= rules, rules
    assert len(live) == 2 * TICKS

    assert replayed(capsys, trace) == live
    assert "open loop" not in capsys.readouterr().err


def test_the_60_s_guest_needs_its_recorded_stats_period(
    conn: libvirt.virConnect, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "live.jsonl"
    live = live_decisions(record(trace, last_update(conn) + 2.0, dry_run=False))
    assert replayed(capsys, trace) == live
    # Without the recorded period the 60 s guest is stale after the policy's 10 s: the replay
    # would give it memory back where the daemon did not.
    lines = trace.read_text().splitlines()
    stripped = tmp_path / "no-period.jsonl"
    with stripped.open("w") as fh:
        fh.write(lines[0] + "\n")
        for line in lines[1:]:
            tick = json.loads(line)
            for g in tick["guests"].values():
                g.pop("stats_period_s", None)
            fh.write(json.dumps(tick) + "\n")
    slow = [d for d in replayed(capsys, stripped) if d["guest"] == SLOW]
    assert slow != [d for d in live if d["guest"] == SLOW]


def test_an_appended_dry_run_replays_from_a_fresh_engine_in_open_loop(
    conn: libvirt.virConnect, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "two-runs.jsonl"
    start = last_update(conn) + 2.0
    first = record(trace, start, dry_run=False, ticks=12)
    second = record(trace, start + 12 * INTERVAL_S, dry_run=True, ticks=12)
    live = live_decisions(first + second)
    assert any(d["action"] != "hold" for d in live_decisions(second))
    assert replayed(capsys, trace) == live
