"""Defects of the control law (issue #21), each as the closed-loop or replayed case that showed
it, against the pure core: ``decide.step`` over sample sequences."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from autoballoon.core.classify import PressureClass, classify
from autoballoon.core.decide import Action, Decision, EngineState, step
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.samples import GuestSample, HostSample
from tests.factories import sample
from tests.unit.test_on_demand import (
    ON_DEMAND,
    RESERVE_KIB,
    TOTAL_KIB,
    VM,
    most_asked_in_any,
)
from tests.unit.test_self_deflate import settled

MIB = 1024
HOST_OK = HostSample(0, mem_total_kib=64 << 20, mem_available_kib=48 << 20)
RESCUE_RULES = frozenset({"rescue", "self-deflated", "stalled-inflation", "low-water", "stale"})


@dataclass
class Workload:
    """A closed-loop guest with a working set it cannot do without.

    The balloon follows targets down to the working set and no further; a balloon within
    ``margin_mib`` of the working set makes the guest stall, and below it the guest OOM-kills
    (a kill a tick, each preceded by alloc stalls, as the page allocator does).
    """

    used_mib: int
    actual_mib: int
    max_mib: int
    margin_mib: int = 16
    extended: bool = True
    kills: int = 0
    stalls: int = 0

    def read(self, t: float) -> GuestSample:
        avail = self.actual_mib - self.used_mib
        if avail < self.margin_mib:
            self.stalls += 20
            if avail <= 0:
                self.kills += 1
        return sample(
            t,
            actual_mib=self.actual_mib,
            max_mib=self.max_mib,
            avail_mib=max(avail, 0),
            oom=self.kills,
            stalls=self.stalls,
            extended=self.extended,
        )

    def follow(self, d: Decision) -> None:
        if d.action is not Action.HOLD:
            self.actual_mib = max(d.target_kib // MIB, self.used_mib)


def drive(
    g: Workload,
    policies: PolicySet,
    ticks: int,
    t0: float = 1000.0,
    interval: float = 2.0,
    state: EngineState | None = None,
) -> tuple[list[Decision], EngineState]:
    state = state or EngineState()
    out = []
    for i in range(ticks):
        now = t0 + i * interval
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, policies)
        out.append(d)
        g.follow(d)
    return out, state


# --- 1. a guest above its (lowered) maximum ---------------------------------------------------

LOWERED = PolicySet(GuestPolicy(mode="proactive", max_mib=2048))


def test_a_guest_above_a_lowered_max_comes_down_only_as_its_signals_allow() -> None:
    # A 4 GiB guest, max_mib lowered to 2 GiB by a reload, a 2.6 GiB working set.
    g = Workload(used_mib=2600, actual_mib=4096, max_mib=4096)
    decisions, _ = drive(g, LOWERED, ticks=450)  # 15 minutes
    assert g.kills == 0, f"{g.kills} OOM kills"
    squeezes = [d for d in decisions if d.action is Action.INFLATE]
    step_kib = int(GuestPolicy().inflate_step_ratio * 2048 * MIB)
    assert all(d.current_kib - d.target_kib <= step_kib for d in squeezes)
    assert not [d for d in squeezes if d.rule in RESCUE_RULES], "a squeeze named a rescue"


def test_a_guest_above_a_lowered_max_is_rescued_like_any_guest() -> None:
    g = Workload(used_mib=2600, actual_mib=4096, max_mib=4096)
    _, state = drive(g, LOWERED, ticks=300)
    assert g.actual_mib > 2048
    g.used_mib = g.actual_mib + 100  # its working set grows past what it has
    decisions, _ = drive(g, LOWERED, ticks=150, t0=1600.0, state=state)
    assert any(d.action is Action.DEFLATE for d in decisions), "never rescued"
    assert not [d for d in decisions if d.action is Action.INFLATE and d.rule in RESCUE_RULES]
    assert g.kills <= 1, f"{g.kills} OOM kills"


def test_a_guest_above_a_lowered_max_with_spare_memory_reaches_the_max() -> None:
    g = Workload(used_mib=800, actual_mib=4096, max_mib=4096)
    decisions, _ = drive(g, LOWERED, ticks=900)
    assert g.actual_mib <= 2048
    assert g.kills == 0


# --- 7. a guest without the 6.12 counters, OOM-killed ----------------------------------------


@dataclass
class Spikes:
    """A closed-loop guest whose working set grows by ``spike_mib`` at ``ramp_mib_per_s`` every
    ``period_s``, then drops back. What does not fit is OOM-killed: the spike's memory is freed
    at once (used memory collapses) and it waits for the next period."""

    extended: bool
    base_mib: int = 300
    spike_mib: int = 300
    ramp_mib_per_s: float = 100.0
    period_s: float = 60.0
    hold_s: float = 20.0
    actual_mib: int = 1024
    max_mib: int = 1024
    kills: int = 0
    stalls: int = 0
    killed_in: int = -1

    def used(self, t: float) -> int:
        n, phase = divmod(t, self.period_s)
        if int(n) == self.killed_in:
            return self.base_mib
        ramp_s = self.spike_mib / self.ramp_mib_per_s
        if phase < ramp_s:
            return self.base_mib + int(phase * self.ramp_mib_per_s)
        if phase < ramp_s + self.hold_s:
            return self.base_mib + self.spike_mib
        return self.base_mib

    def read(self, t: float) -> GuestSample:
        used = self.used(t)
        if used > self.actual_mib - 8:  # the allocator stalls, then kills the spike
            self.kills += 1
            self.stalls += 5
            self.killed_in = int(t // self.period_s)
            used = self.base_mib
        return sample(
            t,
            actual_mib=self.actual_mib,
            max_mib=self.max_mib,
            avail_mib=max(self.actual_mib - used, 0),
            oom=self.kills,
            stalls=self.stalls,
            extended=self.extended,
        )

    def follow(self, d: Decision) -> None:
        if d.action is not Action.HOLD:
            self.actual_mib = d.target_kib // MIB


def kills_in_15_min(g: Spikes) -> int:
    state = EngineState()
    policies = PolicySet(GuestPolicy(mode="proactive"))
    for i in range(450):
        now = 1000.0 + 2 * i
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, policies)
        g.follow(d)
    return g.kills


def test_a_guest_without_the_counters_is_not_squeezed_back_after_each_oom_kill() -> None:
    with_counters = kills_in_15_min(Spikes(extended=True))
    without = kills_in_15_min(Spikes(extended=False))
    assert without <= with_counters + 1, (
        f"{without} kills without the counters, {with_counters} with"
    )


def test_without_the_counters_a_collapse_a_fault_storm_or_swap_in_is_seen() -> None:
    def cls(prev: dict[str, float], new: dict[str, float], avail_before: int, avail: int):  # type: ignore[no-untyped-def]
        history = [
            sample(100, extended=False, actual_mib=600, avail_mib=avail_before, **prev),  # type: ignore[arg-type]
            sample(105, extended=False, actual_mib=600, avail_mib=avail, **new),  # type: ignore[arg-type]
        ]
        return classify(history, GuestPolicy(), now=105.5).klass

    assert cls({}, {}, 60, 400) is PressureClass.OOM  # 340 MiB freed at once near the edge
    assert cls({}, {}, 400, 550) is PressureClass.NONE  # far from the edge: a process ended
    assert cls({}, {"majflt": 2000}, 150, 150) is PressureClass.LIGHT_PRESSURE
    assert cls({}, {"swap_in_mib": 1}, 400, 400) is PressureClass.LIGHT_PRESSURE
    assert cls({}, {}, 400, 400) is PressureClass.NONE


# --- 6. a periodic working set ---------------------------------------------------------------


@pytest.mark.parametrize("extended", [True, False], ids=["counters", "no-counters"])
def test_a_periodic_working_set_is_not_squeezed_below_its_recent_peak(extended: bool) -> None:
    # 1 GiB for a minute, 2 GiB for the next, on a 4 GiB guest, for an hour.
    g = Spikes(
        extended=extended,
        base_mib=1024,
        spike_mib=1024,
        ramp_mib_per_s=200,
        period_s=120,
        hold_s=60,
        actual_mib=4096,
        max_mib=4096,
    )
    state = EngineState()
    policies = PolicySet(GuestPolicy(mode="proactive"))
    sizes, moves = [], []
    for i in range(1800):
        now = 1000.0 + 2 * i
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, policies)
        g.follow(d)
        sizes.append(g.actual_mib)
        if d.action is not Action.HOLD:
            moves.append(d.action)
    assert g.kills <= 1, f"{g.kills} OOM kills in an hour"
    assert sizes[-1] < 3072, "still squeezed down to its peak need plus headroom"
    flips = sum(a != b for a, b in zip(moves, moves[1:], strict=False))
    assert flips <= 2, f"{flips} reversals: each end of the working set read as a kill"


# --- 2. one pressure event rescued twice -----------------------------------------------------


def _reports(*rows: tuple[float, int, dict[str, float]]) -> list[Decision]:
    """Step one guest (600 MiB of 1 GiB) through (tick time, report's last_update, counters)."""
    state, out = EngineState(), []
    policies = PolicySet(GuestPolicy(mode="proactive"))
    for t, lu, counters in rows:
        s = sample(t, actual_mib=600, avail_mib=200, last_update=lu, **counters)  # type: ignore[arg-type]
        (d,), state = step(t, HOST_OK, {"vm": s}, state, policies)
        out.append(d)
    return out


EVENT = {"stalls": 10, "dscan_mib": 20, "drclm_mib": 15}
TAIL = {"stalls": 14, "dscan_mib": 30, "drclm_mib": 22}


def test_a_report_older_than_the_rescue_does_not_rescue_again() -> None:
    # The report read at 1006.5 was made at 1004, before the deflate of 1004.5: its stalls
    # are the same event's, already answered.
    d = _reports((1000.5, 999, {}), (1002.5, 1001, {}), (1004.5, 1003, EVENT), (1006.5, 1004, TAIL))
    assert d[2].action is Action.DEFLATE and d[2].rule == "rescue"
    assert d[3].action is Action.HOLD, d[3]


def test_stalls_in_a_report_made_after_the_rescue_rescue_again() -> None:
    d = _reports((1000.5, 999, {}), (1002.5, 1001, {}), (1004.5, 1003, EVENT), (1006.5, 1005, TAIL))
    assert [x.action for x in d[2:]] == [Action.DEFLATE, Action.DEFLATE]


# --- 3. a stats period longer than the rate window -------------------------------------------


@pytest.mark.parametrize("period_known", [True, False], ids=["period-known", "period-inferred"])
@pytest.mark.parametrize("period_s", [30, 60])
def test_a_guest_reporting_every_30_to_60_s_is_read_across_its_reports(
    period_s: int, period_known: bool
) -> None:
    # Reclaiming under pressure all along (1 stall/s, 2 MiB/s direct scan, 60 % reclaimed),
    # read every 5 s, reported every period_s.
    state = EngineState()
    policies = PolicySet(GuestPolicy(mode="proactive"))
    classes, actions = [], []
    for i in range(120):  # 10 minutes
        now = 1000.0 + 5 * i
        lu = 1000 + (int(now) - 1000) // period_s * period_s
        age = lu - 1000
        s = sample(
            now,
            actual_mib=600,
            avail_mib=300,
            last_update=lu,
            stalls=age,
            dscan_mib=2 * age,
            drclm_mib=1.2 * age,
        )
        s = replace(s, stats_period_s=float(period_s) if period_known else None)
        (d,), state = step(now, HOST_OK, {"vm": s}, state, policies)
        if now >= 1000 + 2 * period_s:  # two reports seen: rates exist
            classes.append(d.klass)
            actions.append(d.action)
    assert Action.INFLATE not in actions
    calm = sum(k in (PressureClass.NONE, PressureClass.UNKNOWN) for k in classes)
    assert calm == 0, f"{calm} of {len(classes)} ticks read as none or unknown"


# --- 5. on-demand: memory the host got back, eaten again --------------------------------------


def test_memory_given_back_to_the_host_and_eaten_again_is_not_asked_again_and_again() -> None:
    # Whatever guests give back reaches the host at the next tick, and is eaten by something
    # else on the host (an ARC, a leak, an unmanaged guest) 30 s later.
    vms = [
        VM(f"vm{i}", 1024, 8192, returns=1.0, actual_kib=8192 * MIB, rss_kib=8192 * MIB)
        for i in range(3)
    ]
    step_kib = int(GuestPolicy().inflate_step_ratio * 8192 * MIB)
    short = 500 * MIB
    available = RESERVE_KIB - short
    state = EngineState()
    arriving: list[tuple[int, int]] = []  # (tick, KiB): + reaches the host, - eaten
    asked: list[tuple[float, int]] = []
    for i in range(900):  # 30 minutes
        now = 1000.0 + 2 * i
        available += sum(k for due, k in arriving if due == i)
        host = HostSample(now, TOTAL_KIB, available)
        decisions, state = step(now, host, {vm.name: vm.read(now) for vm in vms}, state, ON_DEMAND)
        for vm, d in zip(vms, decisions, strict=True):
            if d.action is Action.INFLATE:
                kib = d.current_kib - d.target_kib
                asked.append((now, kib))
                arriving += [(i + 1, kib), (i + 16, -kib)]
                vm.rss_kib -= kib
            if d.action is not Action.HOLD:
                vm.actual_kib = d.target_kib
    assert most_asked_in_any(1800, asked) <= short + 3 * step_kib, (
        f"{sum(k for _, k in asked) // MIB} MiB taken for a {short // MIB} MiB shortfall"
    )


# --- 4. on-demand: memory given back once the host's shortage ends ---------------------------


def on_demand_host(above_after_mib: int, minutes: int = 70) -> tuple[list[Decision], list[int]]:
    """One 4 GiB on-demand guest (1 GiB used); the host is 2 GiB short for 10 minutes, then
    ``above_after_mib`` above its reserve, plus whatever the guest still gives it."""
    vm = VM("vm", used_mib=1024, max_mib=4096, actual_kib=4096 * MIB, rss_kib=4096 * MIB)
    state, out, host_avail = EngineState(), [], []
    for i in range(minutes * 30):
        now = 1000.0 + 2 * i
        base = -2048 if i < 300 else above_after_mib
        given = 4096 * MIB - vm.actual_kib
        available = RESERVE_KIB + base * MIB + given
        (d,), state = step(
            now, HostSample(now, TOTAL_KIB, available), {"vm": vm.read(now)}, state, ON_DEMAND
        )
        out.append(d)
        host_avail.append(available)
        if d.action is not Action.HOLD:
            vm.actual_kib = d.target_kib
            vm.rss_kib = d.target_kib
    return out, host_avail


def test_memory_taken_on_demand_is_given_back_when_the_shortage_ends() -> None:
    decisions, _ = on_demand_host(above_after_mib=3072)
    taken = [d for d in decisions[:300] if d.action is Action.INFLATE]
    assert sum(d.current_kib - d.target_kib for d in taken) >= 1536 * MIB  # premise
    back = [d for d in decisions[300:] if d.action is Action.DEFLATE]
    assert back, "nothing given back"
    step_kib = int(GuestPolicy().inflate_step_ratio * 4096 * MIB)
    assert all(d.target_kib - d.current_kib <= step_kib for d in back), "a bounded rate"
    # all of it, within the hour (the samples round the balloon down to a MiB at every take)
    assert decisions[-1].current_kib >= 4096 * MIB - 16 * MIB
    assert not [d for d in decisions[300:] if d.action is Action.INFLATE]


def test_giving_back_stops_short_of_the_reserve_and_does_not_oscillate() -> None:
    decisions, host_avail = on_demand_host(above_after_mib=512)
    assert [d for d in decisions[300:] if d.action is Action.DEFLATE], "some given back"
    assert not [d for d in decisions[400:] if d.action is Action.INFLATE], "no new take"
    assert min(host_avail[400:]) >= RESERVE_KIB, "the host never short again"


# --- 8. an operator's resize or a hot-plug on a deflate-on-OOM guest --------------------------


@pytest.mark.parametrize("hotplug", [False, True], ids=["setmem", "hot-plug"])
def test_growth_by_someone_else_on_a_deflate_on_oom_guest_is_an_operator_resize(
    hotplug: bool,
) -> None:
    run = settled(autodeflate=True)
    # virsh setmem 512 MiB higher, or a 512 MiB DIMM plugged in: the pages arrive free.
    run.g.actual_mib += 512
    if hotplug:
        run.g.max_mib += 512
    hold_ticks = int(GuestPolicy().external_hold_s / 2) - 5
    held = run.ticks(hold_ticks)
    assert not [d for d in held if d.rule == "self-deflated"], "logged as the guest's own"
    assert all(d.action is Action.HOLD for d in held), "the operator's hold"
    assert any("resized by someone else" in d.reason for d in held)


def test_memory_given_back_by_an_operator_is_not_given_twice_nor_during_the_hold() -> None:
    vm = VM("vm", used_mib=1024, max_mib=4096, actual_kib=4096 * MIB, rss_kib=4096 * MIB)
    state = EngineState()
    decisions = []
    for i in range(900):
        now = 1000.0 + 2 * i
        if i == 140:
            assert vm.actual_kib <= 2100 * MIB  # premise: about 2 GiB taken for the host
            vm.actual_kib += 1024 * MIB  # an operator's setmem gives half of it back
        base = -2048 if i < 150 else 4096
        available = RESERVE_KIB + base * MIB + (4096 * MIB - vm.actual_kib)
        host = HostSample(now, TOTAL_KIB, available)
        (d,), state = step(now, host, {"vm": vm.read(now)}, state, ON_DEMAND)
        if d.action is not Action.HOLD:
            vm.actual_kib = vm.rss_kib = d.target_kib
        decisions.append(d)
        if i == 141:
            left = state.guests["vm"].taken_for_host_kib
            assert 1000 * MIB <= left <= 1050 * MIB, "what the operator gave is not owed"
    hold_ticks = int(GuestPolicy().external_hold_s / 2)
    assert all(d.action is Action.HOLD for d in decisions[140 : 140 + hold_ticks - 1])
    assert [d for d in decisions[140 + hold_ticks :] if d.rule == "give-back"]
    assert state.guests["vm"].taken_for_host_kib == 0


def test_a_reboot_of_a_guest_with_the_counters_is_no_oom() -> None:
    """A guest with the 6.12 counters reboots: for a moment its reports lack them (the balloon
    driver loading again), and its used memory has collapsed (everything it ran is gone). The
    collapse rule is for guests without the counter; this is no OOM kill. (Seen on the lab:
    tests/lab/test_faults.py's guest read `oom` after `dom.reset()`.)"""
    policy = GuestPolicy()
    history = [
        # near the edge before the reboot: 300 of 320 MiB used
        sample(1000.0 + 2 * i, actual_mib=320, max_mib=384, avail_mib=20) for i in range(5)
    ]
    history.append(
        # rebooted: the counters not reported yet, 40 MiB used
        sample(1010.0, actual_mib=320, max_mib=384, avail_mib=280, extended=False)
    )
    c = classify(history, policy, 1010.0)
    assert c.klass is not PressureClass.OOM, c
    # the same collapse on a guest that never had the counters reads as a kill
    without = [replace(s, stats={k: v for k, v in s.stats.items() if not k.startswith(
        ("stat-oom", "stat-alloc", "stat-async", "stat-direct"))}) for s in history]
    assert classify(without, policy, 1010.0).klass is PressureClass.OOM
