"""Limits and conditions of the control law that the mutation check (``tests/mutants.py``)
found no test for: each test here fails when one of them is taken out of the pure core."""

from __future__ import annotations

from autoballoon.core.classify import PressureClass, classify
from autoballoon.core.decide import Action, Decision, EngineState, step
from autoballoon.core.ondemand import GIVE_BACK_BAND_RATIO
from autoballoon.core.policy import GuestPolicy, HostPolicy, PolicySet
from autoballoon.core.samples import HostSample
from autoballoon.core.state import NEED_WINDOW_S, peak_need_kib, remember_need
from tests.factories import sample
from tests.unit.test_law_defects import on_demand_host
from tests.unit.test_on_demand import ON_DEMAND, RESERVE_KIB, TOTAL_KIB, VM
from tests.unit.test_self_deflate import settled

MIB = 1024
PROACTIVE = PolicySet(GuestPolicy(mode="proactive"))
HOST_OK = HostSample(0, mem_total_kib=24 << 20, mem_available_kib=20 << 20)


# --- the peak need ------------------------------------------------------------------------------


def test_the_peak_need_of_a_slot_is_the_most_used_in_it() -> None:
    peaks = remember_need((), 1000.0, 100 * MIB)
    peaks = remember_need(peaks, 1010.0, 700 * MIB)  # the same 30 s slot, more used
    peaks = remember_need(peaks, 1015.0, 300 * MIB)
    assert len(peaks) == 1
    assert peaks[0][1] == 700 * MIB


def test_a_reboot_forgets_the_need_before_it() -> None:
    state = EngineState()
    for i in range(5):
        now = 1000.0 + 2 * i
        s = sample(now, actual_mib=1024, avail_mib=224, stalls=100)  # 800 MiB used
        _, state = step(now, HOST_OK, {"vm": s}, state, PROACTIVE)
    assert peak_need_kib(state.guests["vm"]) == 800 * MIB  # premise
    now = 1100.0  # rebooted: the counters start again, 100 MiB used
    s = sample(now, actual_mib=1024, avail_mib=924, stalls=0)
    _, state = step(now, HOST_OK, {"vm": s}, state, PROACTIVE)
    assert peak_need_kib(state.guests["vm"]) == 100 * MIB


def test_a_peak_need_older_than_the_window_no_longer_limits_spare() -> None:
    # 600 MiB used while we inflate, then 100 MiB: the 600 MiB is kept for NEED_WINDOW_S.
    actual, used, state = 1024, 600, EngineState()
    sizes: list[tuple[float, int]] = []
    drop_t = 1000.0 + 2 * 150
    for i in range(150 + int((NEED_WINDOW_S + 600) / 2)):
        now = 1000.0 + 2 * i
        if now >= drop_t:
            used = 100
        s = sample(now, actual_mib=actual, avail_mib=actual - used)
        (d,), state = step(now, HOST_OK, {"vm": s}, state, PROACTIVE)
        if d.action is not Action.HOLD:
            actual = d.target_kib // MIB
        sizes.append((now, actual))
    within = [mib for t, mib in sizes if drop_t <= t < drop_t + NEED_WINDOW_S - 30]
    assert min(within) >= 600, "taken below the recent peak need within the window"
    assert sizes[-1][1] < 500, "the old peak still holds the guest up after the window"


# --- the echo ------------------------------------------------------------------------------------


def _long_after_our_inflation(dscan_per_s: float) -> tuple[list[Decision], list[Decision]]:
    """We inflate while 600 MiB is used; then the guest uses 100 MiB and the recent peak stops
    further takes with plenty available. Minutes after our last inflation, it stalls (4/s) with
    ``dscan_per_s`` MiB/s scanned directly, all of it reclaimed. Returns the decisions before
    and after the stalls start."""
    actual, used, state = 1024, 600, EngineState()
    stalls = scanned = 0.0
    decisions: list[Decision] = []
    for i in range(150):
        now = 1000.0 + 5 * i
        if i >= 40:
            used = 100
        if i >= 100:
            stalls += 20
            scanned += 5 * dscan_per_s
        s = sample(
            now,
            actual_mib=actual,
            avail_mib=actual - used,
            stalls=int(stalls),
            dscan_mib=scanned,
            drclm_mib=scanned,
        )
        (d,), state = step(now, HOST_OK, {"vm": s}, state, PROACTIVE)
        decisions.append(d)
        if d.action is not Action.HOLD:
            actual = d.target_kib // MIB
    moves = [(i, d.action) for i, d in enumerate(decisions[:100]) if d.action is not Action.HOLD]
    assert moves and moves[-1][1] is Action.INFLATE and moves[-1][0] < 80  # premise
    return decisions[:100], decisions[100:]


def test_reclaim_long_after_our_last_inflation_is_rescued_not_an_echo() -> None:
    _, after = _long_after_our_inflation(dscan_per_s=4.0)
    assert any(d.klass is PressureClass.GLOBAL_RECLAIM for d in after)  # premise
    assert any(d.action is Action.DEFLATE and d.rule == "rescue" for d in after), (
        "reclaim minutes after our last inflation was held as its echo"
    )


def test_stalls_far_above_the_headroom_long_after_our_inflation_hold() -> None:
    # cgroup-stall on a guest we inflated is rescued only near its headroom: with over 600 MiB
    # available our take did not bring it near the edge, and more memory would not help.
    _, after = _long_after_our_inflation(dscan_per_s=0.0)
    assert any(d.klass is PressureClass.CGROUP_STALL for d in after)  # premise
    assert all(d.action is Action.HOLD for d in after), [d.reason for d in after]


# --- rates between reports -----------------------------------------------------------------------


def test_a_rate_spans_the_reports_not_the_readings() -> None:
    # One stall between two reports 10 s apart, read 1 s apart: 0.1 stalls/s, not 1/s.
    history = [
        sample(100.0, stalls=0, last_update=91),
        sample(101.0, stalls=1, last_update=101),
    ]
    c = classify(history, GuestPolicy(), now=101.5)
    assert c.klass is PressureClass.LIGHT_PRESSURE, c


# --- self-deflation and an operator's hot-plug --------------------------------------------------


def test_a_hot_plug_not_yet_reported_as_available_is_no_self_deflate() -> None:
    run = settled(autodeflate=True)
    # A 512 MiB DIMM plugged in; the guest's report still shows the old available memory, so
    # its used memory seems to grow with the balloon, as a deflate-on-OOM's would.
    run.g.actual_mib += 512
    run.g.max_mib += 512
    run.g.used_mib += 512
    decisions = run.ticks(3)
    assert not [d for d in decisions if d.rule == "self-deflated"], "read as the guest's own"
    assert any("resized by someone else" in d.reason for d in decisions)


# --- on-demand: what was taken, and the shortage ------------------------------------------------


def _shortage(vm: VM, ticks: int, short_mib: int, state: EngineState,
              policies: PolicySet = ON_DEMAND, t0: float = 1000.0,
              ) -> tuple[list[Decision], EngineState]:
    out = []
    for i in range(ticks):
        now = t0 + 2 * i
        host = HostSample(now, TOTAL_KIB, RESERVE_KIB - short_mib * MIB)
        (d,), state = step(now, host, {"vm": vm.read(now)}, state, policies)
        out.append(d)
        if d.action is not Action.HOLD:
            vm.actual_kib = vm.rss_kib = d.target_kib
    return out, state


def test_a_rescue_deflate_counts_against_what_was_taken_for_the_host() -> None:
    vm = VM("vm", used_mib=1024, max_mib=4096, actual_kib=4096 * MIB, rss_kib=4096 * MIB)
    decisions, state = _shortage(vm, 40, 1024, EngineState())
    taken = state.guests["vm"].taken_for_host_kib
    assert taken > 0  # premise
    vm.used_mib = vm.actual_kib // MIB - 10  # the guest runs out: low water gives back
    decisions, state = _shortage(vm, 1, 1024, state, t0=1080.0)
    (d,) = decisions
    assert d.action is Action.DEFLATE, d
    assert state.guests["vm"].taken_for_host_kib == max(taken - (d.target_kib - d.current_kib), 0)


def test_nothing_is_given_back_to_a_guest_that_opted_out() -> None:
    vm = VM("vm", used_mib=1024, max_mib=4096, actual_kib=4096 * MIB, rss_kib=4096 * MIB)
    _, state = _shortage(vm, 100, 1024, EngineState())
    assert state.guests["vm"].taken_for_host_kib > 0  # premise
    off = PolicySet(GuestPolicy(mode="on-demand", enabled=False), HostPolicy(reserve_ratio=0.2))
    decisions, _ = _shortage(vm, 300, -4096, state, policies=off, t0=1200.0)
    assert all(d.action is Action.HOLD for d in decisions), "given back to an opted-out guest"


def test_a_new_shortage_is_not_capped_by_what_the_last_one_got() -> None:
    # The last shortage peaked at 500 MiB and guests gave that much: it is over once the host
    # has been above its reserve for a minute, and the next one asks afresh.
    state = EngineState(shortage_peak_kib=500 * MIB, shortage_taken_kib=500 * MIB)
    vm = VM("vm", used_mib=200, max_mib=4096, actual_kib=4096 * MIB, rss_kib=4096 * MIB)
    _, state = _shortage(vm, 40, -1024, state)  # 80 s above the reserve
    decisions, _ = _shortage(vm, 20, 300, state, t0=1080.0)
    assert any(d.rule == "take-on-demand" for d in decisions), [d.rule for d in decisions]


def test_give_back_keeps_the_band_above_the_reserve() -> None:
    # 512 MiB above the reserve plus what was taken: giving back stops where the host keeps
    # GIVE_BACK_BAND_RATIO of its total (1.2 GiB of 24 GiB) above it, not at the reserve.
    decisions, host_avail = on_demand_host(above_after_mib=512)
    assert [d for d in decisions[300:] if d.rule == "give-back"], "some given back"  # premise
    band = int(GIVE_BACK_BAND_RATIO * TOTAL_KIB)
    assert min(host_avail[301:]) >= RESERVE_KIB + band - MIB


def test_give_back_is_a_step_per_cooldown_at_most() -> None:
    decisions, _ = on_demand_host(above_after_mib=3072)
    back = [d.t for d in decisions if d.rule == "give-back"]
    assert len(back) > 2  # premise
    gaps = [b - a for a, b in zip(back, back[1:], strict=False)]
    assert min(gaps) >= GuestPolicy().cooldown_s, gaps


def test_a_guest_not_asked_because_the_shortfall_is_covered_says_so() -> None:
    # Two guests with spare memory, a host 100 MiB short: the first one asked covers it, and
    # the other is left alone as "host-covered" (nothing was given and taken again yet).
    vms = [
        VM(f"vm{i}", used_mib=200, max_mib=4096, actual_kib=4096 * MIB, rss_kib=4096 * MIB)
        for i in range(2)
    ]
    state = EngineState()
    for i in range(30):
        now = 1000.0 + 2 * i
        host = HostSample(now, TOTAL_KIB, RESERVE_KIB - 100 * MIB)
        decisions, state = step(now, host, {vm.name: vm.read(now) for vm in vms}, state,
                                ON_DEMAND)
        if any(d.rule == "take-on-demand" for d in decisions):
            break
    rules = sorted(d.rule for d in decisions)
    assert rules == ["host-covered", "take-on-demand"], rules
