"""Replay must equal live, on real guests: the daemon runs with `--record`, and `autoballoon
replay` of that trace, with no --policies (the policies the trace records), decides what the
daemon decided, tick by tick.

Two idle-ish 512 MiB guests under the aggressive preset (proactive: it inflates a calm guest
step by step), one reporting its statistics every 10 s and one every 60 s (a cloud manager's
setting). The daemon runs as a process, through its CLI, for long enough that the 60 s guest
has reported a few times since its first inflation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contrib.lab import (
    Guest,
    GuestSpec,
    autoballoon_command,
    daemon_command,
    preset_policy_dir,
    run_daemon,
)
from tests.lab.conftest import LabUp

pytestmark = pytest.mark.lab

TEN, SIXTY = "ab-lab-r-10s", "ab-lab-r-60s"
PERIODS = {TEN: 10, SIXTY: 60}
RUN_S = 150
INTERVAL_S = 2.0


@pytest.fixture(scope="module")
def guests(lab_up: LabUp) -> Iterator[dict[str, Guest]]:
    booted = {
        g.name: g for g in lab_up([GuestSpec(TEN, 512, "steady:96"), GuestSpec(SIXTY, 512, "idle")])
    }
    for name, period in PERIODS.items():
        booted[name].set_stats_period_s(period)
    try:
        yield booted
    finally:
        for g in booted.values():
            g.set_stats_period_s(1)


Key = tuple[str, str, int, int, str, str]


def keyed(guest: str, action: str, current: int, target: int, rule: str, reason: str) -> Key:
    """One decision as both sides can write it: guest, action, from, to, rule, reason."""
    return (guest, action, current, target, rule, reason)


def test_replay_of_a_live_recording_gives_the_live_decisions(
    guests: dict[str, Guest], tmp_path: Path, record_property: Any
) -> None:
    for name, period in PERIODS.items():
        assert guests[name].stats_period_s() == period
    trace = tmp_path / "live.jsonl"
    cmd = daemon_command(
        "ab-lab-r-*",
        preset_policy_dir(tmp_path),
        interval_s=INTERVAL_S,
        duration_s=RUN_S,
        record=trace,
        log_format="json",
        status_file=tmp_path / "status.json",
    )
    live = run_daemon(cmd, capture_output=True, timeout=RUN_S + 120)
    assert live.returncode == 0, live.stderr[-3000:]

    # What the daemon did, from its JSON log: one line per change (and notable hold).
    logged = [json.loads(x) for x in live.stderr.splitlines() if x.startswith("{")]
    acted = [
        keyed(x["guest"], x["action"], x["from_kib"], x["to_kib"], x["rule"], x["reason"])
        for x in logged
        if "action" in x
    ]
    # What it decided at every tick, holds included: the trace's own record of it.
    recorded: list[Key] = []
    for line in trace.read_text().splitlines()[1:]:
        tick = json.loads(line)
        for name in sorted(tick["guests"]):
            g = tick["guests"][name]
            d = g["decision"]
            recorded.append(keyed(name, d["action"], g["actual_kib"], d["target_kib"],
                                  d["rule"], d["reason"]))  # fmt: skip
    samples = [g for line in trace.read_text().splitlines()[1:]
               for g in json.loads(line)["guests"].values()]  # fmt: skip
    assert {g["stats_period_s"] for g in samples} == {10, 60}, "the trace keeps both periods"

    replay = run_daemon(
        autoballoon_command("replay", str(trace), "--json"), capture_output=True, timeout=300
    )
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert "not the policies recorded" not in replay.stderr
    *lines, summary = (json.loads(x) for x in replay.stdout.splitlines())
    replayed = [
        keyed(x["guest"], x["action"], x["current_kib"], x["target_kib"], x["rule"], x["reason"])
        for x in lines
    ]
    replayed_acts = [r for r in replayed if r[1] != "hold" or r[4] == "self-deflated"]

    changes = [r for r in recorded if r[1] != "hold"]
    record_property("decisions compared", len(recorded))
    record_property("changes", len(changes))
    record_property("changes per guest", {n: sum(r[0] == n for r in changes) for n in PERIODS})
    # Not vacuous: the daemon really resized both guests.
    assert {r[0] for r in changes} == set(PERIODS), changes
    assert acted == [r for r in recorded if r[1] != "hold" or r[4] == "self-deflated"]

    assert summary["summary"]["loop"] == "closed"
    assert replayed == recorded
    assert replayed_acts == acted
