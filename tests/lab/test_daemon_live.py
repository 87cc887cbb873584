"""The daemon live against real guests: each assertion checks what the guest itself reported.

Guests (shared by every test here, booted once): an idle one, a ramp whose working set grows
from 32 to 300 MiB, and a steady one holding 160 MiB. Order matters and is the file's order:
the dry run sees fresh guests at their maximum; then one live run drives all three for about
two minutes, and in its last part an operator squeezes the steady guest below its working set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoballoon.core.decide import Action
from contrib.lab import (
    Guest,
    GuestSpec,
    Lab,
    daemon_command,
    preset_policies,
    preset_policy_dir,
    run_daemon,
)
from tests.lab.conftest import LabUp
from tests.lab.daemon_helpers import INTERVAL_S, Run, direction_changes

pytestmark = pytest.mark.lab

IDLE, RAMP, STEADY = "ab-lab-d-idle", "ab-lab-d-ramp", "ab-lab-d-steady"
SPECS = [
    GuestSpec(IDLE, 512, "idle"),
    GuestSpec(RAMP, 512, "ramp:32:300:150"),
    GuestSpec(STEADY, 384, "steady:160"),
]
LIVE_S = 110.0  # long enough for the idle guest to converge and stay put for a while
SQUEEZE_MIB = 120  # below the steady guest's 160 MiB working set
AFTER_SQUEEZE_S = 24.0
STATS_PERIOD_S = 1.0  # the lab boots guests with <stats period='1'/>


@pytest.fixture(scope="module")
def guests(lab_up: LabUp) -> dict[str, Guest]:
    return {g.name: g for g in lab_up(SPECS)}


HARM = ("oom_kill", "allocstall", "memload_restarts")
"""What the guest's console reports that a take must not cause: OOM kills, allocation stalls
(direct reclaim), restarts of its workload (it was killed and came back)."""


def oom_kills(g: Guest) -> int:
    return harm(g)["oom_kill"]


def harm(g: Guest) -> dict[str, int]:
    report = g.latest_report()
    assert report is not None, f"{g.name} sent no report"
    return {k: int(report[k]) for k in HARM}


def test_dry_run_changes_nothing_but_reports_decisions(
    guests: dict[str, Guest], tmp_path: Path
) -> None:
    policies = preset_policy_dir(tmp_path)
    before = {n: g.balloon_actual_mib() for n, g in guests.items()}
    cmd = daemon_command(
        "ab-lab-d-*",
        policies,
        dry_run=True,
        duration_s=30,
        interval_s=INTERVAL_S,
        log_format="json",
        status_file=tmp_path / "status.json",
    )
    proc = run_daemon(cmd, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = {n: g.balloon_actual_mib() for n, g in guests.items()}
    assert after == before, "a dry run must not change any balloon"
    lines = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    would = [x for x in lines if x.get("dry_run") and x.get("action") == "inflate"]
    assert any(x["guest"] == IDLE for x in would), "the idle guest would have been inflated"
    assert all(x["result"] == "dry-run" for x in would)
    assert all(x["to_kib"] < x["from_kib"] for x in would)


@dataclass
class LiveRun:
    run: Run
    oom_before: dict[str, int]
    oom_after: dict[str, int]
    memtotal_kib: dict[str, int]
    squeeze_t: float
    ws_peak_mib: dict[str, int]
    harm_before: dict[str, dict[str, int]]
    harm_at_squeeze: dict[str, dict[str, int]]
    """Each guest's harm counters before the run, and just before the operator's squeeze."""


@pytest.fixture(scope="module")
def live(guests: dict[str, Guest], lab: Lab) -> Iterator[LiveRun]:
    for g in guests.values():  # every run starts from all guests at max
        g.set_balloon_mib(g.spec.mem_mib)
    time.sleep(2)
    oom_before = {n: oom_kills(g) for n, g in guests.items()}
    harm_before = {n: harm(g) for n, g in guests.items()}
    guests[RAMP].set_balloon_mib(192)  # the ramp guest starts small
    with Run(list(guests), preset_policies()) as run:
        time.sleep(LIVE_S)
        harm_at_squeeze = {n: harm(g) for n, g in guests.items()}
        squeeze_t = time.time()
        guests[STEADY].set_balloon_mib(SQUEEZE_MIB)  # an operator's `virsh setmem`
        time.sleep(AFTER_SQUEEZE_S)
    assert not run.errors, run.errors
    ws_peak = {n: max(int(r["ws_mib"]) for r in g.console_reports()) for n, g in guests.items()}
    yield LiveRun(
        run,
        oom_before,
        {n: oom_kills(g) for n, g in guests.items()},
        {n: int(g.latest_report()["MemTotal"]) for n, g in guests.items()},  # type: ignore[index]
        squeeze_t,
        ws_peak,
        harm_before,
        harm_at_squeeze,
    )


def test_idle_guest_is_inflated_to_its_floor_and_stays_put(live: LiveRun) -> None:
    run = live.run
    pre_squeeze = [d for d in run.decisions(IDLE) if d.t < live.squeeze_t]
    changes = [d for d in pre_squeeze if d.action is not Action.HOLD]
    assert changes and all(d.action is Action.INFLATE for d in changes)
    floor_kib = pre_squeeze[-1].floor_kib
    final_kib = pre_squeeze[-1].current_kib
    # within one step (10 % of 512 MiB) of its floor, which is above its need + headroom
    assert final_kib <= floor_kib + 52 * 1024, (final_kib, floor_kib)
    # the guest itself sees the smaller memory
    assert live.memtotal_kib[IDLE] < 200 * 1024
    # converged, then stayed put: nothing changed in the last 30 s before the squeeze
    assert all(d.t < live.squeeze_t - 30 for d in changes)
    assert direction_changes(run.decisions(IDLE)) == 0


def test_ramp_guest_is_deflated_as_it_grows_without_oom(live: LiveRun) -> None:
    decisions = live.run.decisions(RAMP)
    deflates = [d for d in decisions if d.action is Action.DEFLATE]
    assert deflates, "the growing guest was given memory"
    last = decisions[-1]
    assert last.current_kib // 1024 > live.ws_peak_mib[RAMP], "it ends above its working set"
    assert live.oom_after[RAMP] == live.oom_before[RAMP], "no OOM kill in the ramp guest"
    assert live.oom_after[IDLE] == live.oom_before[IDLE]


def test_steady_guest_is_inflated_without_harm(live: LiveRun) -> None:
    """Harm is what the guest's console says: from before the run to just before the
    operator's squeeze (which is meant to hurt), no OOM kill, no allocation stall, no restart
    of its workload."""
    pre = [d for d in live.run.decisions(STEADY) if d.t < live.squeeze_t]
    assert any(d.action is Action.INFLATE for d in pre)
    assert pre[-1].current_kib < 384 * 1024
    assert direction_changes(pre) <= 1
    before, after = live.harm_before[STEADY], live.harm_at_squeeze[STEADY]
    assert {k: after[k] - before[k] for k in HARM} == dict.fromkeys(HARM, 0), (before, after)


def test_operator_squeeze_into_pressure_is_deflated_within_two_ticks(
    live: LiveRun, record_property: Callable[[str, object], None]
) -> None:
    decisions = live.run.decisions(STEADY)
    before = [d for d in decisions if d.t < live.squeeze_t][-1]
    after = [d for d in decisions if d.t >= live.squeeze_t]
    trail = [f"{d.t - live.squeeze_t:.1f}s {d.klass} {d.current_kib // 1024} {d.action} "
             f"{d.reason}" for d in after]
    # The controller saw the squeeze land (the balloon below where it was and where the
    # controller last put it), so the test times a real reaction. Under TCG the balloon can take
    # a few seconds to get from ~280 to 120 MiB: the rescue may come before it gets there.
    was_kib = min(before.current_kib, before.target_kib)
    assert any(d.current_kib < was_kib for d in after), (was_kib // 1024, trail)
    rescue = next((d for d in after if d.action is Action.DEFLATE), None)
    assert rescue is not None, trail
    assert rescue.target_kib > rescue.current_kib
    # Timed from the squeeze itself, not from the first tick that noticed it: the next tick
    # comes within one interval, the guest's evidence within one stats period (1 s) of the
    # squeeze landing, and the rescue at the latest one tick after that.
    delay_s = rescue.t - live.squeeze_t
    record_property("rescue_after_squeeze_s", round(delay_s, 2))  # in --junitxml reports
    assert 0 < delay_s <= 2 * INTERVAL_S + STATS_PERIOD_S + 0.5, (delay_s, trail)
