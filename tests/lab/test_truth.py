"""The classes against what the guests really live through (their ABREPORT truth channel).

Two guests, booted once, the daemon's controller live on both for about 80 s:

- ``cg``: a memory cgroup (v2) at its 64 MiB ``memory.max`` inside a 512 MiB guest, its
  workload OOM-killed there about every 1.5 s while the guest has plenty available. Linux 6.12
  counts those kills in the guest's global ``oom_kill`` (stat-oom-kills) too; the guest must be
  neither deflated for them nor kept from being inflated.
- ``out``: no swap, its anonymous working set growing from 32 to 400 MiB over 100 s in a 512 MiB
  guest ballooned to 224 MiB: it must be given memory back before any OOM kill.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from autoballoon.core.classify import PressureClass
from autoballoon.core.decide import Action, Decision
from contrib.lab import Guest, GuestSpec, preset_policies
from tests.lab.conftest import LabUp
from tests.lab.daemon_helpers import Run

pytestmark = pytest.mark.lab

CG, OUT = "ab-lab-t-cg", "ab-lab-t-out"
SPECS = [
    GuestSpec(CG, 512, "cache:16+cgroup:64:100"),
    GuestSpec(OUT, 512, "ramp:32:400:100"),
]
OUT_START_MIB = 224
LIVE_S = 80.0


@dataclass
class Outcome:
    decisions: dict[str, list[Decision]]
    first: dict[str, dict[str, float]]
    last: dict[str, dict[str, float]]


def report(g: Guest) -> dict[str, float]:
    rep = g.latest_report()
    assert rep is not None, f"{g.name} sent no report"
    return rep


@pytest.fixture(scope="module")
def outcome(lab_up: LabUp) -> Iterator[Outcome]:
    guests = {g.name: g for g in lab_up(SPECS)}
    guests[OUT].set_balloon_mib(OUT_START_MIB)
    guests[OUT].wait_for(
        lambda g: g.balloon_actual_mib() <= OUT_START_MIB + 1, timeout=30, what="the squeeze"
    )
    # The guest reports every few seconds: the starting point is its first report that has seen
    # the squeeze (MemTotal is the balloon less what the kernel keeps), not the one before it.
    guests[OUT].wait_for(
        lambda g: (r := g.latest_report()) is not None and r["MemTotal"] <= OUT_START_MIB * 1024,
        timeout=30,
        what="a report after the squeeze",
    )
    first = {n: report(g) for n, g in guests.items()}
    with Run(list(guests), preset_policies()) as run:
        time.sleep(LIVE_S)
    assert not run.errors, run.errors
    yield Outcome(
        {n: run.decisions(n) for n in guests},
        first,
        {n: report(g) for n, g in guests.items()},
    )


def test_a_cgroup_at_its_limit_is_not_deflated_and_does_not_block_inflation(
    outcome: Outcome,
) -> None:
    first, last, ds = outcome.first[CG], outcome.last[CG], outcome.decisions[CG]
    cg_kills = last["cg_oom_kill"] - first["cg_oom_kill"]
    assert cg_kills >= 10, "the cgroup workload did not hit its limit"  # the truth happened
    assert last["oom_kill"] - first["oom_kill"] >= cg_kills  # and 6.12 counts it globally
    assert first["MemAvailable"] >= 256 * 1024  # while the guest has plenty available
    classes = {d.klass for d in ds}
    assert PressureClass.CGROUP_OOM in classes, classes
    assert PressureClass.OOM not in classes, [d.reason for d in ds if d.klass == "oom"]
    assert not [d for d in ds if d.action is Action.DEFLATE], [d.reason for d in ds]
    inflated = [d for d in ds if d.action is Action.INFLATE]
    assert inflated, [d.reason for d in ds][-5:]
    assert any(d.klass is PressureClass.CGROUP_OOM for d in ds if d.t > inflated[0].t)


def test_swapless_exhaustion_is_given_memory_back_before_any_oom_kill(
    outcome: Outcome,
) -> None:
    first, last, ds = outcome.first[OUT], outcome.last[OUT], outcome.decisions[OUT]
    assert last["ws_mib"] >= OUT_START_MIB, "the working set did not outgrow the squeeze"
    deflates = [d for d in ds if d.action is Action.DEFLATE]
    assert deflates, [d.reason for d in ds][-5:]
    assert last["oom_kill"] == first["oom_kill"], [d.reason for d in deflates]
    assert last["memload_restarts"] == first["memload_restarts"]
    assert last["MemTotal"] > first["MemTotal"] + 64 * 1024
