"""A guest whose statistics period someone else set to 10 s (like OpenStack Nova, or
`virsh dommemstat --period 10`) is controlled like any other: never `unknown` once reporting,
and reclaimed alongside an identical guest that reports every second.

Two idle 512 MiB guests, one at the lab's 1 s period and one switched live to 10 s; the real
controller (libvirt adapter, pure core, live actuator) with the aggressive preset (proactive,
short stability and cooldown) for two minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from autoballoon.core.classify import PressureClass
from autoballoon.core.decide import Action
from contrib.lab import Guest, GuestSpec, preset_policies
from tests.lab.conftest import LabUp
from tests.lab.daemon_helpers import Run

pytestmark = pytest.mark.lab

FAST, SLOW = "ab-lab-p-1s", "ab-lab-p-10s"
MEM_MIB = 512
RUN_S = 120.0
STEP_KIB = int(0.10 * MEM_MIB) * 1024  # the aggressive preset's inflate step


@pytest.fixture(scope="module")
def run(lab_up: LabUp) -> Iterator[Run]:
    guests: dict[str, Guest] = {
        g.name: g
        for g in lab_up([GuestSpec(FAST, MEM_MIB, "idle"), GuestSpec(SLOW, MEM_MIB, "idle")])
    }
    guests[SLOW].set_stats_period_s(10)
    try:
        assert guests[SLOW].stats_period_s() == 10
        with Run(list(guests), preset_policies()) as r:
            time.sleep(RUN_S)
        assert not r.errors, r.errors
        yield r
    finally:
        guests[SLOW].set_stats_period_s(1)


def test_the_guest_really_reports_every_10_s(run: Run) -> None:
    samples = [g.sample for r in run.reports for g in r.guests if g.name == SLOW]
    assert {s.stats_period_s for s in samples} == {10}
    updates = sorted({s.last_update for s in samples})
    gaps = [b - a for a, b in zip(updates, updates[1:], strict=False)]
    assert len(gaps) >= 8 and min(gaps) >= 9, gaps  # QEMU's last-update, in whole seconds


def test_never_unknown_once_reporting(run: Run) -> None:
    decisions = run.decisions(SLOW)
    # The first tick has one sample: no rate yet. From the second on, never unknown (with a
    # fixed 10 s staleness, about half the ticks were, and the guest was given memory back).
    assert len(decisions) > 40
    unknown = [(d.t, d.reason) for d in decisions[1:] if d.klass is PressureClass.UNKNOWN]
    assert unknown == []
    assert all(d.rule != "stale" for d in decisions)


def test_reclaimed_like_the_guest_that_reports_every_second(
    run: Run, record_property: Callable[[str, object], None]
) -> None:
    final = {n: run.decisions(n)[-1] for n in (FAST, SLOW)}
    taken = {n: d.max_kib - d.current_kib for n, d in final.items()}
    for n in (FAST, SLOW):
        record_property(f"{n} taken MiB", taken[n] // 1024)
        record_property(f"{n} inflations", len(run.changes(n)))
    assert all(d.action is Action.INFLATE for d in run.changes(SLOW)), "only inflations"
    assert len(run.changes(SLOW)) >= 3, run.changes(SLOW)
    # Both idle guests end where the headroom stops the taking: within one step of each other.
    assert taken[SLOW] >= taken[FAST] - STEP_KIB, taken
    assert final[SLOW].current_kib <= final[SLOW].floor_kib + 2 * STEP_KIB, final[SLOW]
