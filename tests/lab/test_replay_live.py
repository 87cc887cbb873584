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

from autoballoon.core.decide import NOTABLE_HOLDS
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


Key = tuple[str, int, str, int, int, str, str]


def keyed(
    tick: int, guest: str, action: str, current: int, target: int, rule: str, reason: str
) -> Key:
    """One decision as every side can write it: tick number (-1: the log has none), guest,
    action, from, to, rule, reason. Sorted, a list of them is in tick, then guest order."""
    return (guest, tick, action, current, target, rule, reason)


def is_logged(k: Key) -> bool:
    """The log has a line for every change and for the notable holds."""
    return k[2] != "hold" or k[5] in NOTABLE_HOLDS


def untimed(keys: list[Key]) -> list[Key]:
    """Per guest in order, without the tick number: what the log can be compared with."""
    return sorted((k[:1] + (-1,) + k[2:] for k in keys), key=lambda k: k[0])


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

    # What the daemon did, from its JSON log: one line per change (and notable hold), in order.
    logged = [json.loads(x) for x in live.stderr.splitlines() if x.startswith("{")]
    acted = [
        keyed(-1, x["guest"], x["action"], x["from_kib"], x["to_kib"], x["rule"], x["reason"])
        for x in logged
        if "action" in x
    ]
    # What it decided at every tick, holds included: the trace's own record of it.
    ticks = [json.loads(line) for line in trace.read_text().splitlines()[1:]]
    recorded = sorted(
        keyed(i, name, g["decision"]["action"], g["actual_kib"], g["decision"]["target_kib"],
              g["decision"]["rule"], g["decision"]["reason"])
        for i, tick in enumerate(ticks)
        for name, g in tick["guests"].items()
    )  # fmt: skip
    periods = {(n, g.get("stats_period_s")) for tick in ticks for n, g in tick["guests"].items()}
    assert periods == set(PERIODS.items()), "the trace keeps each guest's period"

    replay = run_daemon(
        autoballoon_command("replay", str(trace), "--json"), capture_output=True, timeout=300
    )
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert "not the policies recorded" not in replay.stderr
    *lines, summary = (json.loads(x) for x in replay.stdout.splitlines())
    tick_of = {t["t"]: i for i, t in enumerate(ticks)}
    replayed = sorted(
        keyed(tick_of[x["t"]], x["guest"], x["action"], x["current_kib"], x["target_kib"],
              x["rule"], x["reason"])
        for x in lines
    )  # fmt: skip

    changes = [k for k in recorded if k[2] != "hold"]
    record_property("decisions compared", len(recorded))
    record_property("changes", len(changes))
    record_property("changes per guest", {n: [k[2] for k in changes if k[0] == n] for n in PERIODS})
    # Not vacuous: the daemon really resized both guests.
    assert {k[0] for k in changes} == set(PERIODS), changes
    # The trace says what the log says the daemon did.
    assert untimed([k for k in recorded if is_logged(k)]) == untimed(acted)

    assert summary["summary"]["loop"] == "closed"
    assert len(replayed) == len(recorded) == len(PERIODS) * len(ticks)
    assert replayed == recorded
    assert untimed([k for k in replayed if is_logged(k)]) == untimed(acted)
