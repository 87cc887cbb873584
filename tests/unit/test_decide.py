"""decide(): the control law, one behaviour per test, on synthetic samples."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from autoballoon.core.classify import PressureClass
from autoballoon.core.decide import Action, Decision, EngineState, step
from autoballoon.core.policy import GuestPolicy, HostPolicy, Match, PolicyLayer, PolicySet
from autoballoon.core.samples import HostSample
from tests.factories import sample

PROACTIVE = PolicySet(GuestPolicy(mode="proactive"))
HOST_OK = HostSample(0, mem_total_kib=24 << 20, mem_available_kib=20 << 20)
HOST_SHORT = HostSample(0, mem_total_kib=24 << 20, mem_available_kib=(24 << 20) // 10)


@dataclass
class Guest:
    """A closed-loop guest: the balloon follows targets, available = size - used."""

    name: str = "vm"
    used_mib: int = 200
    max_mib: int = 1024
    actual_mib: int = 1024
    counters: dict[str, float] = field(default_factory=dict)

    def read(self, t: float):  # type: ignore[no-untyped-def]
        return sample(
            t,
            name=self.name,
            actual_mib=self.actual_mib,
            max_mib=self.max_mib,
            avail_mib=max(self.actual_mib - self.used_mib, 0),
            **self.counters,  # type: ignore[arg-type]
        )


def run(
    guests: list[Guest],
    policies: PolicySet,
    ticks: int,
    interval: float = 2.0,
    host: HostSample = HOST_OK,
    follow: bool = True,
) -> list[list[Decision]]:
    state = EngineState()
    out = []
    for i in range(ticks):
        now = 1000.0 + i * interval
        samples = {g.name: g.read(now) for g in guests}
        decisions, state = step(now, host, samples, state, policies)
        out.append(decisions)
        for g, d in zip(guests, decisions, strict=True):
            if follow and d.action is not Action.HOLD:
                g.actual_mib = d.target_kib // 1024
    return out


def flips(trace: list[list[Decision]], index: int = 0) -> int:
    dirs = [t[index].action for t in trace if t[index].action is not Action.HOLD]
    return sum(1 for a, b in zip(dirs, dirs[1:], strict=False) if a != b)


def test_idle_guest_is_inflated_to_its_need_plus_headroom_and_stays_put() -> None:
    g = Guest(used_mib=200)
    trace = run([g], PROACTIVE, ticks=400)
    p = GuestPolicy()
    # settles where available is within one step above the headroom
    headroom = max(p.headroom_mib, p.headroom_ratio * g.actual_mib)
    assert g.actual_mib - g.used_mib >= headroom
    assert g.actual_mib - g.used_mib <= headroom + p.inflate_step_ratio * g.max_mib + 1
    assert flips(trace) == 0
    last_change = max(i for i, t in enumerate(trace) if t[0].action is not Action.HOLD)
    assert last_change < 300, "converged well before the end and then held"
    assert all(t[0].action is Action.INFLATE for t in trace if t[0].action is not Action.HOLD)


def test_inflation_waits_for_stability_and_respects_cooldown() -> None:
    g = Guest()
    trace = run([g], PROACTIVE, ticks=40, interval=1.0)
    changes = [i for i, t in enumerate(trace) if t[0].action is not Action.HOLD]
    p = GuestPolicy()
    assert changes[0] >= p.stable_s  # class none must hold for stable_s first
    assert all(b - a >= p.cooldown_s for a, b in zip(changes, changes[1:], strict=False))


def test_floor_is_never_crossed() -> None:
    """Every tick, not only the last: a guest that needs almost nothing is walked down to its
    floor and never past it, and the take that reaches it says the floor limited it."""
    g = Guest(used_mib=10)
    floor_kib = GuestPolicy().floor_kib(1024 * 1024)
    assert floor_kib == 256 * 1024  # the larger of floor_mib (128) and 25 % of 1024 MiB
    trace = run([g], PROACTIVE, ticks=600)
    for (d,) in trace:
        assert d.floor_kib == floor_kib
        assert d.current_kib >= floor_kib and d.target_kib >= floor_kib, d
    assert g.actual_mib == floor_kib // 1024
    assert trace[-1][0].available_kib and trace[-1][0].available_kib > 64 * 1024, "spare left"
    last_take = [d for (d,) in trace if d.action is Action.INFLATE][-1]
    assert last_take.target_kib == floor_kib and last_take.clamped_by == "floor"


def test_a_guest_below_its_floor_is_brought_back_up_to_it() -> None:
    """Someone set it below the floor (or the policy's floor was raised): ``below-floor``
    deflates it to the floor exactly, once, whatever its class."""
    floor_mib = GuestPolicy().floor_kib(1024 * 1024) // 1024
    g = Guest(actual_mib=floor_mib - 100, used_mib=10)
    trace = run([g], PROACTIVE, ticks=3)
    (d,) = trace[0]
    assert d.action is Action.DEFLATE and d.rule == "below-floor", d
    assert d.target_kib == floor_mib * 1024
    assert [t[0].action for t in trace[1:]] == [Action.HOLD, Action.HOLD]


@pytest.mark.parametrize(
    "klass_counters",
    [{"oom": 1, "stalls": 3}, {"stalls": 40, "dscan_mib": 200, "drclm_mib": 5}],
)
def test_oom_and_thrashing_deflate_at_once_by_a_large_step(
    klass_counters: dict[str, float],
) -> None:
    g = Guest(actual_mib=400, used_mib=200)
    state = EngineState()
    policies = PROACTIVE
    for now in (1000.0, 1002.0):
        _, state = step(now, HOST_OK, {"vm": g.read(now)}, state, policies)
    g.counters = klass_counters
    (d,), state = step(1004.0, HOST_OK, {"vm": g.read(1004.0)}, state, policies)
    assert d.action is Action.DEFLATE
    assert d.klass in (PressureClass.OOM, PressureClass.THRASHING)
    assert d.target_kib - d.current_kib >= int(0.4 * 1024 * 1024)
    # the same evidence is not answered twice: counted from our change on, it is gone
    g.actual_mib = d.target_kib // 1024
    (d2,), _ = step(1006.0, HOST_OK, {"vm": g.read(1006.0)}, state, policies)
    assert d2.action is Action.HOLD, d2.reason
    assert d2.klass is PressureClass.NONE


def test_global_reclaim_deflates_by_a_medium_step_and_blocks_inflation() -> None:
    g = Guest(actual_mib=600, used_mib=200)
    state = EngineState()
    for now in (1000.0, 1002.0):
        _, state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE)
    g.counters = {"stalls": 40, "dscan_mib": 200, "drclm_mib": 150}
    (d,), state = step(1004.0, HOST_OK, {"vm": g.read(1004.0)}, state, PROACTIVE)
    assert d.klass is PressureClass.GLOBAL_RECLAIM and d.action is Action.DEFLATE
    assert d.target_kib - d.current_kib == int(0.15 * 1024 * 1024)
    g.actual_mib = d.target_kib // 1024
    block = GuestPolicy().pressure_block_s
    now = 1004.0
    while now < 1004.0 + block - 2:  # calm again, with plenty spare: still not inflated
        now += 2
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE)
        assert d.action is Action.HOLD, d.reason
    for _ in range(30):
        now += 2
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE)
        if d.action is Action.INFLATE:
            break
    assert d.action is Action.INFLATE, "inflation resumes after the block"


def test_low_water_deflates_before_any_stall() -> None:
    g = Guest(actual_mib=300, used_mib=290)
    (d,) = run([g], PROACTIVE, ticks=2)[-1]
    assert d.klass is PressureClass.NONE
    assert d.action is Action.DEFLATE and "low water" in d.reason


def test_a_rescue_from_below_the_floor_lands_at_least_on_the_floor() -> None:
    """Every change is clamped into [floor, max], deflations too: a guest far below its floor
    (its balloon has not followed yet) that needs a rescue is deflated to the floor, not by a
    medium step that would leave it under it."""
    g = Guest(actual_mib=64, used_mib=50)
    floor_kib = GuestPolicy().floor_kib(1024 * 1024)  # 256 MiB: more than 64 + a medium step
    state = EngineState()
    (d,), state = step(1000.0, HOST_OK, {"vm": g.read(1000.0)}, state, PROACTIVE)
    assert d.rule == "below-floor" and d.target_kib == floor_kib
    g.counters = {"stalls": 40, "dscan_mib": 200, "drclm_mib": 150}  # global reclaim
    (d,), _ = step(1002.0, HOST_OK, {"vm": g.read(1002.0)}, state, PROACTIVE)
    assert d.klass is PressureClass.GLOBAL_RECLAIM and d.rule == "rescue", d
    assert d.action is Action.DEFLATE
    assert d.target_kib == floor_kib and d.clamped_by == "floor", d


def test_changes_under_min_change_are_skipped_unless_rescues() -> None:
    """``min_change_mib`` (8 MiB): 3.4 MiB spare above the headroom is not taken, and a balloon
    4 MiB below its floor is not moved for it; both hold and say why."""
    p = GuestPolicy()
    headroom_mib = p.headroom_kib(1024 * 1024) / 1024  # 153.6 MiB
    spare = Guest(used_mib=int(1024 - headroom_mib - 4))
    for (d,) in run([spare], PROACTIVE, ticks=60):
        assert d.action is Action.HOLD, d
    assert d.rule == "spare" and spare.actual_mib == 1024
    floor_mib = p.floor_kib(1024 * 1024) // 1024
    under = Guest(actual_mib=floor_mib - 4, used_mib=10)
    (d,) = run([under], PROACTIVE, ticks=1)[0]
    assert d.action is Action.HOLD and d.rule == "below-floor", d
    assert "change under 8 MiB skipped" in d.reason


def test_a_guest_above_its_policy_maximum_comes_down_to_it_by_above_max() -> None:
    """A policy ``max_mib`` under the domain's maximum: a calm guest above it is brought down
    by ``above-max``, as fast as it can spare (each step within the spare limits, not the whole
    way at once, which squeezed guests whose working set was above the new maximum), until it
    is at the maximum; only then do spare takes go on below it."""
    capped = PolicySet(GuestPolicy(mode="proactive", max_mib=512, stable_s=0))
    g = Guest(actual_mib=1024, used_mib=100)
    changes = [t[0] for t in run([g], capped, ticks=400) if t[0].action is not Action.HOLD]
    above = [d for d in changes if d.current_kib > 512 * 1024]
    assert above and all(d.action is Action.INFLATE and d.rule == "above-max" for d in above)
    assert len(above) > 1, "one spare step at a time, not the whole way at once"
    assert above[-1].target_kib == 512 * 1024, above[-1]
    rest = changes[len(above):]
    assert rest and all(d.rule == "take-proactive" and d.current_kib <= 512 * 1024
                        for d in rest), rest


def test_a_low_water_overshoot_is_taken_back_only_after_the_block() -> None:
    """A constant workload under low water: one medium deflate lands well above the headroom;
    the overshoot is taken back, but only once ``pressure_block_s`` has passed since the rescue,
    and the takes stop at the headroom, so nothing is ever deflated again (one turn, not a
    swing)."""
    g = Guest(actual_mib=300, used_mib=290)
    p = GuestPolicy()
    trace = run([g], PROACTIVE, ticks=400)
    changes = [(i * 2.0, t[0]) for i, t in enumerate(trace) if t[0].action is not Action.HOLD]
    (t0, first), *rest = changes
    assert first.action is Action.DEFLATE and first.rule == "low-water"
    assert rest and all(d.action is Action.INFLATE for _, d in rest), changes
    assert rest[0][0] - t0 >= p.pressure_block_s
    headroom_mib = max(p.headroom_mib, p.headroom_ratio * g.actual_mib)
    assert headroom_mib <= g.actual_mib - g.used_mib < headroom_mib + p.min_change_mib


@pytest.mark.parametrize(
    "counters",
    [{"stalls": 40, "dscan_mib": 0.5}, {"ascan_mib": 400, "arclm_mib": 5}],
    ids=["cgroup-stall", "reclaim-struggling"],
)
def test_cgroup_stall_and_struggling_hold(
    counters: dict[str, float], request: pytest.FixtureRequest
) -> None:
    """Held as that class, by ``under-pressure`` (not by the calm timer or a cooldown): with
    ``stable_s = 0`` and no cooldown nothing else would stop an inflation of 700 MiB spare."""
    klass = PressureClass(request.node.callspec.id)
    eager = PolicySet(GuestPolicy(mode="proactive", stable_s=0, cooldown_s=0))
    g = Guest(actual_mib=800, used_mib=100)
    state = EngineState()
    for i in range(60):
        now = 1000.0 + i
        g.counters = {k: v * i for k, v in counters.items()}
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, eager)
        if i > 1:
            assert d.action is Action.HOLD, d.reason
            assert d.klass is klass and d.rule == "under-pressure", d


def test_stalls_without_scan_in_a_guest_short_of_memory_are_running_out() -> None:
    g = Guest(actual_mib=300, used_mib=250)  # 50 MiB available: above low water, under headroom
    state = EngineState()
    for i in range(3):
        now = 1000.0 + 2 * i
        g.counters = {"stalls": 10 * i, "dscan_mib": 0.2 * i}
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE)
    assert d.klass is PressureClass.RUNNING_OUT
    assert d.action is Action.DEFLATE and d.rule == "rescue"
    assert d.target_kib == 300 * 1024 + int(0.40 * 1024 * 1024)  # the large step


def test_a_cgroup_oom_neither_deflates_nor_blocks_inflation() -> None:
    # A container at its memory.max is OOM-killed every few seconds inside a guest with plenty
    # available: the guest is still inflated as if calm, and never deflated for it.
    g = Guest(actual_mib=1024, used_mib=200)
    state = EngineState()
    classes, actions = set(), []
    for i in range(40):
        now = 1000.0 + 2 * i
        g.counters = {"oom": i // 2}
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE)
        classes.add(d.klass)
        actions.append(d.action)
        if d.action is not Action.HOLD:
            g.actual_mib = d.target_kib // 1024
    assert PressureClass.CGROUP_OOM in classes
    assert PressureClass.OOM not in classes
    assert Action.DEFLATE not in actions
    assert Action.INFLATE in actions


def test_a_global_oom_after_a_stall_still_deflates() -> None:
    g = Guest(actual_mib=400, used_mib=390)
    state = EngineState()
    for i in range(3):
        now = 1000.0 + 2 * i
        g.counters = {"oom": i, "stalls": 5 * i}
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE)
    assert d.klass is PressureClass.OOM and d.action is Action.DEFLATE


def test_observe_mode_never_acts_but_says_what_it_would_do() -> None:
    obs = PolicySet(GuestPolicy(mode="observe"))
    starved, idle = Guest(name="a", actual_mib=300, used_mib=290), Guest(name="b", used_mib=50)
    trace = run([starved, idle], obs, ticks=200)
    assert all(d.action is Action.HOLD for t in trace for d in t)
    assert any("would deflate" in t[0].reason for t in trace)
    assert any("observe mode never acts" in t[1].reason for t in trace)


def test_opted_out_guest_is_never_resized() -> None:
    layer = PolicyLayer("optout.toml", Match(names=("vm",)), {"enabled": False})
    trace = run([Guest()], PolicySet(GuestPolicy(mode="proactive"), layers=(layer,)), ticks=100)
    assert all(t[0].action is Action.HOLD for t in trace)


def test_on_demand_takes_only_what_the_host_needs_lowest_priority_first() -> None:
    layer = PolicyLayer("vip.toml", Match(names=("vip",)), {"priority": 90})
    # The shortfall's takes alone: the fit would also take these guests' free memory, which
    # a host whose MemAvailable never moves cannot tell from cache (tests/unit/test_fit.py).
    host_policy = HostPolicy(reserve_mib=0, reserve_ratio=0.2, fit=False)
    policies = PolicySet(GuestPolicy(mode="on-demand"), host_policy, layers=(layer,))
    vip, low = Guest(name="vip"), Guest(name="low")
    short_kib = 30 * 1024
    host = HostSample(0, 24 << 20, int(0.2 * (24 << 20)) - short_kib)
    trace = run([vip, low], policies, ticks=300, host=host)  # 10 minutes, the balloon follows
    takes = [
        (d.guest, d.current_kib - d.target_kib)
        for t in trace
        for d in t
        if d.action is Action.INFLATE
    ]
    # the first take is the whole shortfall, from the lower priority
    assert takes[0] == ("low", short_kib)
    # over 10 minutes of a shortfall that inflation does not move: at most the shortfall plus
    # one inflate step per guest
    step_kib = int(GuestPolicy().inflate_step_ratio * 1024 * 1024)
    assert sum(k for _, k in takes) <= short_kib + 2 * step_kib
    # and nothing is taken while the host is fine
    quiet = run([Guest(name="x")], policies, ticks=60, host=HOST_OK)
    assert all(t[0].action is Action.HOLD for t in quiet)


def test_unknown_is_never_inflated() -> None:
    """A guest that never sent statistics, 824 MiB nominally spare, on a short host, with no
    calm time and no cooldown required: ``unknown`` holds it, by its own rule."""
    eager = PolicySet(GuestPolicy(mode="proactive", stable_s=0, cooldown_s=0))
    g = Guest()
    state = EngineState()
    for i in range(100):
        now = 1000.0 + 2 * i
        s = g.read(now)
        s = replace(s, last_update=0)
        (d,), state = step(now, HOST_SHORT, {"vm": s}, state, eager)
        assert d.action is Action.HOLD and d.klass is PressureClass.UNKNOWN
        assert d.rule == "unknown", d  # its own rule, not a calm timer or the headroom


def test_a_guest_without_memory_figures_is_left_alone_not_read_as_empty() -> None:
    """Fresh reports without MemAvailable or MemFree, a balloon below the maximum: ``unknown``
    holds; a missing figure is not "nothing available" (low water would deflate it)."""
    g = Guest(actual_mib=600)
    state = EngineState()
    for i in range(30):
        now = 1000.0 + 2 * i
        s = g.read(now)
        blind = {k: v for k, v in s.stats.items() if "available" not in k and "free" not in k}
        (d,), state = step(now, HOST_OK, {"vm": replace(s, stats=blind)}, state, PROACTIVE)
        assert d.klass is PressureClass.UNKNOWN and d.rule == "unknown", d
        assert d.action is Action.HOLD


def test_operator_resize_is_respected_but_rescue_still_works() -> None:
    g = Guest(used_mib=100)
    state = EngineState()
    now = 1000.0
    for _ in range(40):
        now += 2
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE)
        if d.action is not Action.HOLD:
            g.actual_mib = d.target_kib // 1024
    g.actual_mib = 700  # virsh setmem by hand
    held = []
    for _ in range(60):
        now += 2
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE)
        held.append(d)
    assert all(d.action is Action.HOLD for d in held)
    assert any("someone else" in d.reason for d in held)
    g.counters = {"oom": 1, "stalls": 3}
    now += 2
    (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE)
    assert d.action is Action.DEFLATE and d.klass is PressureClass.OOM


def test_stalled_inflation_is_backed_off_and_not_retried_below() -> None:
    g = Guest(used_mib=100)
    state = EngineState()
    now = 1000.0
    stuck_at = 800
    actions = []
    for _ in range(200):
        now += 2
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE)
        actions.append(d)
        if d.action is not Action.HOLD:
            g.actual_mib = max(d.target_kib // 1024, stuck_at)  # the guest cannot go lower
    stalled = [d for d in actions if "stalled" in d.reason]
    assert len(stalled) == 1
    assert stalled[0].action is Action.DEFLATE
    after = actions[actions.index(stalled[0]) + 1 :]
    assert all(
        d.action is Action.HOLD for d in after[: int(GuestPolicy().pressure_block_s / 2) - 1]
    )


def test_policy_error_leaves_the_guest_alone() -> None:
    a = PolicyLayer("a.toml", Match(names=("vm-*",)), {})
    b = PolicyLayer("b.toml", Match(names=("vm*",)), {})
    trace = run([Guest(name="vm-1")], PolicySet(GuestPolicy(mode="proactive"), layers=(a, b)), 50)
    assert all(t[0].action is Action.HOLD and "more than one policy" in t[0].reason for t in trace)


def test_inflation_waits_for_a_report_newer_than_the_last_change() -> None:
    """Stats every 30 s, cooldown 0: the spare memory of one report is taken once, not twice."""
    policies = PolicySet(GuestPolicy(mode="proactive", cooldown_s=0, stable_s=0, stale_after_s=90))
    actual_mib, used_mib = 1024, 200
    report = (0, 0)  # (last_update, available MiB as of that report)
    state = EngineState()
    inflations = []
    for i in range(150):
        now = 1000.0 + 2 * i
        if int(now) % 30 == 0:
            report = (int(now), actual_mib - used_mib)
        s = sample(now, actual_mib=actual_mib, avail_mib=report[1], last_update=report[0])
        (d,), state = step(now, HOST_OK, {"vm": s}, state, policies)
        if d.action is Action.INFLATE:
            inflations.append((now, report[0]))
            actual_mib = d.target_kib // 1024
    assert len(inflations) >= 3
    for (t_prev, _), (_, reported) in zip(inflations, inflations[1:], strict=False):
        assert reported > t_prev, "each take is based on a report made after the previous one"


def test_a_guest_reporting_every_10_s_is_never_unknown_once_reporting() -> None:
    """Nova sets a 10 s stats period: staleness follows it, with a margin of one tick."""
    rng = random.Random(3)
    actual_mib, used_mib = 1024, 200
    state = EngineState()
    report = None
    decisions = []
    for i in range(200):
        now = 1000.9 + 5 * i  # a 5 s tick
        due = 1000.7 + 10 * (i // 2) + rng.uniform(0, 1.5)  # a report every 10 s, late by <1.5 s
        if report is None or (due <= now and due > report[0]):
            report = (due, actual_mib - used_mib)
        s = sample(now, actual_mib=actual_mib, avail_mib=report[1], last_update=int(report[0]))
        s = replace(s, stats_period_s=10.0)
        (d,), state = step(now, HOST_OK, {"vm": s}, state, PROACTIVE)
        decisions.append(d)
        if d.action is not Action.HOLD:
            actual_mib = d.target_kib // 1024
    assert [d.klass for d in decisions[1:]].count(PressureClass.UNKNOWN) == 0
    assert any(d.action is Action.INFLATE for d in decisions), "reclaimed like any other"
    assert not any(d.action is Action.DEFLATE for d in decisions)


@pytest.mark.parametrize(
    ("actual_kib", "max_kib"),
    [(1 << 20, 0), (1 << 20, -5), (0, 1 << 20), (1 << 20, 1 << 50), (-1, 1 << 20)],
    ids=["max-0", "max-negative", "actual-0", "max-absurd", "actual-negative"],
)
def test_a_size_that_makes_no_sense_is_left_alone_never_a_target_of_0(
    actual_kib: int, max_kib: int
) -> None:
    g = Guest(used_mib=100)
    state = EngineState()
    for i in range(40):
        now = 1000.0 + 2 * i
        s = replace(g.read(now), actual_kib=actual_kib, max_kib=max_kib)
        (d,), state = step(now, HOST_SHORT, {"vm": s}, state, PROACTIVE)
        assert d.action is Action.HOLD and d.target_kib == d.current_kib, d
        assert "makes no sense" in d.reason


def test_a_wall_clock_step_back_changes_nothing() -> None:
    """t on a monotonic clock; QEMU's last-update on the wall clock, which steps back an hour
    at tick 50: the decisions are those of a run without the step."""

    def run_with(step_at: int) -> list[Decision]:
        g = Guest(used_mib=200)
        state = EngineState()
        out = []
        for i in range(300):
            t = 5000.0 + 2 * i  # monotonic
            wall = 1.8e9 + 2 * i - (3600 if i >= step_at else 0)
            s = replace(g.read(t), last_update=int(wall), stats_age_s=wall - int(wall))
            (d,), state = step(t, HOST_OK, {"vm": s}, state, PROACTIVE)
            out.append(d)
            if d.action is not Action.HOLD:
                g.actual_mib = d.target_kib // 1024
        return out

    stepped, steady = run_with(50), run_with(10**9)
    assert stepped == steady
    assert sum(d.action is Action.INFLATE for d in stepped) >= 3
    assert all(d.klass is not PressureClass.UNKNOWN for d in stepped[1:])


def test_a_reading_older_than_the_last_is_not_put_in_the_history() -> None:
    g = Guest(used_mib=200)
    state = EngineState()
    for i in range(10):
        now = 1000.0 + 2 * i
        _, state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE)
    before = state.guests["vm"]
    (d,), after = step(900.0, HOST_OK, {"vm": g.read(900.0)}, state, PROACTIVE)
    assert d.action is Action.HOLD and d.rule == "out-of-order", d
    assert "118 s older" in d.reason
    assert after.guests["vm"] == before, "nothing dropped, nothing repeated"
    (d,), after = step(1020.0, HOST_OK, {"vm": g.read(1020.0)}, after, PROACTIVE)
    assert after.guests["vm"].history[-2:] == (before.history[-1], g.read(1020.0))


def stall_after_takes(
    g: Guest, takes_until: Callable[[Guest], bool]
) -> tuple[int, list[Decision]]:
    """Calm ticks (the guest inflated as the law takes) until ``takes_until`` holds or 400 s
    pass, then 10 s of alloc stalls with little direct scan, the balloon following each
    decision. Returns the size the takes reached and the decisions under the stalls."""
    state = EngineState()
    now = 1000.0
    while now < 1400 and not takes_until(g):
        now += 2
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE)
        if d.action is not Action.HOLD:
            g.actual_mib = d.target_kib // 1024
    taken = g.actual_mib
    decisions = []
    for i in range(1, 6):
        now += 2
        g.counters = {"stalls": 6 * i, "dscan_mib": 0.3 * i}
        (d,), state = step(now, HOST_OK, {"vm": g.read(now)}, state, PROACTIVE)
        decisions.append(d)
        if d.action is not Action.HOLD:
            g.actual_mib = d.target_kib // 1024
    return taken, decisions


def test_stalls_with_memory_available_on_a_guest_we_inflated_are_given_memory_back() -> None:
    """The demo's idle guest: squeezed until only about its headroom was available (there,
    50 MiB of re-read page cache at its floor; here 64 MiB), it stalled about twice a second: a
    cgroup-stall by the counters, but ours. Without an inflation of ours first, the same stalls
    hold."""
    g = Guest(actual_mib=1024, used_mib=200)  # squeezed until 64 MiB available: the headroom
    squeezed, decisions = stall_after_takes(g, lambda g: False)
    assert squeezed < 700, "the guest was never inflated: the case is not exercised"
    assert any(d.klass is PressureClass.CGROUP_STALL for d in decisions)
    assert any(d.action is Action.DEFLATE and d.rule == "rescue" for d in decisions)
    assert g.actual_mib > squeezed


def test_stalls_far_above_the_headroom_after_our_inflation_hold() -> None:
    """The warm PostgreSQL guest stalled once with 391 MiB available after three takes; here,
    stalls after one take with over 400 MiB available. Our take did not bring it near the
    edge, so the stalls hold it (no rescue) as they would on a guest we never touched."""
    g = Guest(actual_mib=1024, used_mib=100)
    taken, decisions = stall_after_takes(g, lambda g: g.actual_mib < 1024)  # one take
    assert taken < 1024, "never inflated: the case is not exercised"
    stalls = [d for d in decisions if d.klass is PressureClass.CGROUP_STALL]
    assert stalls, [d.reason for d in decisions]  # the stalls were classified as in the demo
    assert all(d.available_kib and d.available_kib > 400 * 1024 for d in stalls)
    assert all(d.action is Action.HOLD and d.rule == "under-pressure" for d in stalls), stalls
    assert g.actual_mib == taken
