"""The startup size (``startup_mib`` / ``startup_ratio``): a guest first seen before it has
filled its memory goes to its startup size at once, taking only what is free in it beyond the
headroom; a warm guest keeps what it uses; it happens once, and never in observe mode."""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from autoballoon.core.decide import Action, Decision, EngineState, step
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.samples import HostSample
from tests.factories import sample

MIB = 1024
HOST_OK = HostSample(0, mem_total_kib=24 << 20, mem_available_kib=20 << 20)
HALF = GuestPolicy(startup_ratio=0.5)  # on-demand, the default mode: the host is fine


def run(policy: GuestPolicy, ticks: list[tuple[int, int]], actual: int = 1024,
        follow: bool = True) -> list[Decision]:
    """One guest over ticks of (available, free) MiB, 5 s apart; the balloon follows our
    changes when ``follow``."""
    state, out, top = EngineState(), [], actual
    for i, (avail, free) in enumerate(ticks):
        now = 1000.0 + 5 * i
        s = sample(now, actual_mib=actual, max_mib=top, avail_mib=min(avail, actual),
                   free_mib=min(free, actual))
        decisions, state = step(now, HOST_OK, {"vm": s}, state, PolicySet(policy))
        d = decisions[0]
        out.append(d)
        if follow and d.action is not Action.HOLD:
            actual = d.target_kib // MIB
    return out


def test_a_booting_guest_goes_to_its_startup_size_at_once() -> None:
    ds = run(HALF, [(900, 880)] * 4)
    changes = [d for d in ds if d.action is not Action.HOLD]
    assert [(d.rule, d.action, d.target_kib) for d in changes] == [
        ("startup", Action.INFLATE, 512 * MIB)]
    assert ds.index(changes[0]) <= 1  # the first tick it can be classified, no calm wait
    assert "startup size 512 MiB" in changes[0].reason


def test_a_warm_guest_keeps_what_it_uses() -> None:
    # 600 MiB available but only 40 free: its page cache. Nothing for the startup rule.
    ds = run(HALF, [(600, 40)] * 4)
    assert all(d.rule != "startup" for d in ds)
    assert all(d.action is Action.HOLD for d in ds)  # on-demand, host fine: nothing else


def test_only_free_memory_beyond_the_headroom_is_taken() -> None:
    # 300 MiB free of 1024: the guest uses 724; headroom 15 % of 1024 = 153 MiB.
    ds = run(HALF, [(500, 300)] * 3)
    (d,) = [d for d in ds if d.action is not Action.HOLD]
    assert d.rule == "startup"
    assert d.target_kib == 1024 * MIB - 300 * MIB + int(0.15 * 1024 * MIB)
    assert "as far as its free memory allows" in d.reason


def test_startup_happens_once() -> None:
    # Brought to 512, the guest frees memory again later: the startup rule does not come back.
    ds = run(HALF, [(900, 880)] * 2 + [(480, 470)] * 20)
    assert sum(d.rule == "startup" for d in ds) == 1


def test_a_guest_resized_by_someone_else_or_under_pressure_or_observed_is_left_alone() -> None:
    observe = run(GuestPolicy(startup_ratio=0.5, mode="observe"), [(900, 880)] * 4)
    assert all(d.action is Action.HOLD for d in observe)
    assert all(d.rule != "startup" for d in observe)
    none_set = run(GuestPolicy(), [(900, 880)] * 4)
    assert all(d.rule != "startup" for d in none_set)


def test_a_guest_an_operator_just_resized_keeps_that_size() -> None:
    # Seen at 1024 MiB, then someone runs `virsh setmem` to 900 MiB: that is held
    # (external_hold_s), not overridden by the startup size.
    state = EngineState()
    rules = []
    for i, actual in enumerate((1024, 900, 900, 900)):
        now = 1000.0 + 5 * i
        s = sample(now, actual_mib=actual, max_mib=1024, avail_mib=actual - 30,
                   free_mib=actual - 40)
        (d,), state = step(now, HOST_OK, {"vm": s}, state, PolicySet(HALF))
        rules.append((d.rule, d.action))
    assert rules[0] == ("unknown", Action.HOLD)  # premise: first sight is not classified yet
    assert all(a is Action.HOLD for _, a in rules[1:]), rules
    assert "startup" not in {r for r, _ in rules}


def test_startup_below_the_floor_is_refused_with_the_fix() -> None:
    with pytest.raises(ValidationError, match="raise startup_mib or lower floor_mib"):
        GuestPolicy(startup_mib=100, floor_mib=128)
    with pytest.raises(ValidationError, match="raise startup_ratio or lower floor_ratio"):
        GuestPolicy(startup_ratio=0.1)
    assert GuestPolicy(startup_mib=256).startup_kib(1024 * MIB) == 256 * MIB
    assert GuestPolicy(startup_mib=256, startup_ratio=0.5).startup_kib(1024 * MIB) == 512 * MIB
    assert GuestPolicy(startup_mib=4096).startup_kib(1024 * MIB) == 1024 * MIB  # max caps it
    assert GuestPolicy().startup_kib(1024 * MIB) is None


def test_startup_never_takes_used_memory_nor_crosses_the_floor() -> None:
    seen = {"took": 0, "not": 0}

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(actual=st.integers(256, 4096), free_share=st.floats(0.0, 1.0),
           ratio=st.floats(0.25, 1.0), floor=st.integers(16, 256))
    def prop(actual: int, free_share: float, ratio: float, floor: int) -> None:
        p = GuestPolicy(startup_ratio=ratio, floor_mib=floor)
        free = int(free_share * actual)
        ds = run(p, [(free, free)] * 2, actual=actual, follow=False)
        took = [d for d in ds if d.rule == "startup"]
        event("startup took" if took else "startup took nothing")
        seen["took" if took else "not"] += 1
        start = p.startup_kib(actual * MIB)
        assert start is not None
        for d in took:  # sizes are rounded to whole MiB
            assert d.action is Action.INFLATE
            headroom = max(64 * MIB, int(0.15 * actual * MIB))
            assert d.target_kib >= actual * MIB - free * MIB + headroom - MIB
            assert d.target_kib >= p.floor_kib(actual * MIB)
            assert d.target_kib >= start

    prop()
    # Both kinds of guest occur a fair share of the time: booting ones and warm ones.
    assert seen["took"] >= 60, seen
    assert seen["not"] >= 60, seen
