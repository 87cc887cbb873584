"""The control law one rule at a time: each rule on the facts that make it propose, and on the
nearest facts that make it decline (the next rule then decides)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from autoballoon.core import decide
from autoballoon.core.classify import (
    CALM_CLASSES,
    PRESSURE_CLASSES,
    Basis,
    Classification,
    PressureClass,
)
from autoballoon.core.decide import (
    RULES,
    Action,
    Change,
    EngineState,
    Facts,
    GuestState,
    Hold,
    Offer,
    step,
)
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.samples import HostSample
from autoballoon.core.state import Held
from tests.factories import sample

MIB = 1024
P = GuestPolicy(mode="proactive")
HI = 1024 * MIB
MEDIUM = int(P.deflate_medium_ratio * HI)
LARGE = int(P.deflate_large_ratio * HI)


def facts(
    klass: PressureClass = PressureClass.NONE,
    cur_mib: int = 800,
    avail_mib: int = 400,
    policy: GuestPolicy = P,
    now: float = 1000.0,
    last_update: int | None = None,
    **over: Any,
) -> Facts:
    s = sample(now, actual_mib=cur_mib, avail_mib=avail_mib, last_update=last_update)
    f = Facts(
        sample=s,
        c=Classification(klass, "because", Basis.EXTENDED),
        p=policy,
        gs=GuestState(history=(s,), none_since=now - 3600),
        now=now,
        cur=cur_mib * MIB,
        lo=policy.floor_kib(HI),
        hi=policy.max_kib(HI),
        tol=max(policy.min_change_mib, 1) * MIB,
        available_kib=avail_mib * MIB,
        available=avail_mib * MIB,
        since_change=None,
        reported_since_change=True,
        external=False,
        stalled=False,
    )
    return f._replace(**over)


def test_rules_run_in_the_documented_order() -> None:
    names = [r.__name__.replace("_", "-") for r in RULES] + ["spare"]
    doc = decide.__doc__ or ""
    positions = [doc.index(f"``{n}``") for n in names]
    assert positions == sorted(positions), names


def test_opted_out() -> None:
    assert decide.opted_out(facts(policy=P.model_copy(update={"enabled": False}))) == Hold(
        "opted out (enabled = false)"
    )
    assert decide.opted_out(facts()) is None


@pytest.mark.parametrize(
    ("klass", "step_kib"),
    [
        (PressureClass.OOM, LARGE),
        (PressureClass.RUNNING_OUT, LARGE),
        (PressureClass.THRASHING, LARGE),
        (PressureClass.GLOBAL_RECLAIM, MEDIUM),
    ],
)
def test_rescue(klass: PressureClass, step_kib: int) -> None:
    got = decide.rescue(facts(klass, cur_mib=400))
    assert isinstance(got, Change) and got.rescue
    assert got.target_kib == 400 * MIB + step_kib
    at_max = decide.rescue(facts(klass, cur_mib=1024))
    assert isinstance(at_max, Hold) and "already at max" in at_max.reason


@pytest.mark.parametrize(
    "klass",
    [
        PressureClass.CGROUP_STALL,
        PressureClass.CGROUP_OOM,
        PressureClass.NONE,
        PressureClass.UNKNOWN,
    ],
)
def test_rescue_declines_other_classes(klass: PressureClass) -> None:
    assert decide.rescue(facts(klass, cur_mib=400)) is None


def test_below_floor() -> None:
    lo = P.floor_kib(HI)
    got = decide.below_floor(facts(cur_mib=lo // MIB - 10))
    assert isinstance(got, Change) and got.target_kib == lo
    assert decide.below_floor(facts(cur_mib=lo // MIB)) is None


def test_stalled_inflation() -> None:
    f = facts(cur_mib=700, stalled=True, since_change=12.0)
    f = f._replace(gs=f.gs._replace(last_target_kib=500 * MIB))
    got = decide.stalled_inflation(f)
    assert isinstance(got, Change) and got.rescue
    assert got.target_kib == got.stuck_floor_kib == 700 * MIB + MEDIUM
    assert "stalled at 700 MiB (target 500 MiB" in got.reason
    assert decide.stalled_inflation(f._replace(stalled=False)) is None


def test_stale() -> None:
    old = int(1000 - P.stale_after_s - 5)
    got = decide.stale(facts(PressureClass.UNKNOWN, cur_mib=600, last_update=old))
    assert isinstance(got, Change) and got.target_kib == 600 * MIB + MEDIUM
    assert not got.rescue
    # not stale, at max, in cooldown, never reported: declines
    assert decide.stale(facts(PressureClass.UNKNOWN, cur_mib=600)) is None
    assert decide.stale(facts(PressureClass.UNKNOWN, cur_mib=1024, last_update=old)) is None
    cooling = facts(PressureClass.UNKNOWN, cur_mib=600, last_update=old, since_change=1.0)
    assert decide.stale(cooling) is None
    assert decide.stale(facts(PressureClass.UNKNOWN, cur_mib=600, last_update=0)) is None
    assert decide.stale(facts(PressureClass.NONE, cur_mib=600, last_update=old)) is None
    # a guest that reports every 30 s is not stale 25 s after its last report...
    f = facts(PressureClass.UNKNOWN, cur_mib=600, last_update=975)
    slow = f._replace(gs=f.gs._replace(history=(replace(f.sample, stats_period_s=30.0),)))
    assert decide.stale(slow) is None
    # ...but is once the period and a tick have passed
    assert isinstance(decide.stale(slow._replace(now=1040.0)), Change)


def test_unknown() -> None:
    got = decide.unknown(facts(PressureClass.UNKNOWN))
    assert isinstance(got, Hold) and "never inflated" in got.reason
    assert decide.unknown(facts(PressureClass.NONE)) is None


def test_low_water() -> None:
    low = P.low_water_kib(300 * MIB) // MIB
    got = decide.low_water(facts(cur_mib=300, avail_mib=low - 1))
    assert isinstance(got, Change) and got.rescue and got.target_kib == 300 * MIB + MEDIUM
    assert decide.low_water(facts(cur_mib=300, avail_mib=low)) is None
    # the guest has not reported since our change: its figure predates it
    stale_figure = facts(cur_mib=300, avail_mib=low - 1, reported_since_change=False)
    assert decide.low_water(stale_figure) is None
    at_max = decide.low_water(facts(cur_mib=1024, avail_mib=1))
    assert isinstance(at_max, Hold) and "at max" in at_max.reason


@pytest.mark.parametrize(
    "klass",
    sorted(PRESSURE_CLASSES),
)
def test_under_pressure_holds_every_pressure_class(klass: PressureClass) -> None:
    got = decide.under_pressure(facts(klass))
    assert isinstance(got, Hold) and got.reason.startswith(f"{klass}:")


@pytest.mark.parametrize("klass", sorted(CALM_CLASSES))
def test_under_pressure_lets_calm_classes_through(klass: PressureClass) -> None:
    assert decide.under_pressure(facts(klass)) is None


@pytest.mark.parametrize(
    ("over", "said"),
    [
        ({"gs": GuestState(none_since=995.0)}, "calm for 5/20 s"),
        ({"since_change": 3.0}, "cooldown 3/15 s"),
        (
            {"gs": GuestState(none_since=0.0, holds={"rescue": Held(900.0)})},
            "blocked after rescue 100/300",
        ),
        ({"external": True}, "resized by someone else"),
        ({"reported_since_change": False}, "no report since the last change"),
    ],
)
def test_waiting(over: dict[str, Any], said: str) -> None:
    got = decide.waiting(facts(**over))
    assert isinstance(got, Hold) and said in got.reason
    assert decide.waiting(facts()) is None


def test_observe_mode() -> None:
    got = decide.observe_mode(facts(policy=GuestPolicy(mode="observe")))
    assert got == Hold("none: observe mode never acts")
    assert decide.observe_mode(facts()) is None


def test_above_max() -> None:
    capped = P.model_copy(update={"max_mib": 512})
    step_kib = int(capped.inflate_step_ratio * 512 * MIB)
    got = decide.above_max(facts(policy=capped, cur_mib=600))
    assert got == Change(600 * MIB - step_kib, "none: above max 512 MiB, coming down as it spares")
    near = decide.above_max(facts(policy=capped, cur_mib=520))
    assert isinstance(near, Change) and near.target_kib == 512 * MIB
    # no faster than the guest can spare: never into its headroom
    full = decide.above_max(facts(policy=capped, cur_mib=600, avail_mib=90))
    assert isinstance(full, Hold) and "nothing spare" in full.reason
    assert decide.above_max(facts(policy=capped, cur_mib=512)) is None
    # above a lowered max, a rescue gives memory back (up to the domain's maximum)
    rescued = decide.rescue(facts(PressureClass.OOM, policy=capped, cur_mib=600))
    assert isinstance(rescued, Change) and rescued.target_kib > 600 * MIB


def test_spare_offers_what_is_above_the_headroom_within_one_step() -> None:
    headroom = P.headroom_kib(800 * MIB)
    step_kib = int(P.inflate_step_ratio * HI)
    assert decide.spare(facts(avail_mib=400)) == Offer(step_kib, "step")
    near = (headroom + 20 * MIB) // MIB
    assert decide.spare(facts(avail_mib=near)) == Offer(near * MIB - headroom, None)
    lo = P.floor_kib(HI)
    assert decide.spare(facts(cur_mib=lo // MIB + 10)) == Offer(10 * MIB, "floor")
    held = {"stuck-floor": Held(1000.0, 2000.0)}
    stuck = facts()._replace(gs=GuestState(stuck_floor_kib=790 * MIB, holds=held))
    assert decide.spare(stuck) == Offer(10 * MIB, "stuck-floor")
    nothing = decide.spare(facts(avail_mib=headroom // MIB))
    assert isinstance(nothing, Hold) and "headroom" in nothing.reason


def test_every_decision_names_its_rule() -> None:
    """Through step(): the rule recorded is the one that proposed (and the host's share)."""
    policies = PolicySet(GuestPolicy(mode="proactive", stable_s=0))
    host = HostSample(0, 24 << 20, 20 << 20)
    state = EngineState()
    seen = {}
    kill = {"oom": 1, "stalls": 2}  # the guest's own: the allocator stalled before it
    for i, counters in enumerate([{}, {}, kill, kill]):
        now = 1000.0 + 2 * i
        s = sample(now, actual_mib=600, avail_mib=400, **counters)
        (d,), state = step(now, host, {"vm": s}, state, policies)
        seen[i] = (d.action, d.rule)
    assert seen[0] == (Action.HOLD, "unknown")  # one sample: no rates yet
    assert seen[1] == (Action.INFLATE, "take-proactive")
    assert seen[2] == (Action.DEFLATE, "rescue")
    assert seen[3] == (Action.HOLD, "waiting")  # the same kill is not answered twice
