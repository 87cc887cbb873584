"""Invariants of the pure core, as hypothesis properties.

- every target the engine acts on is within [floor, max];
- no guest in a pressure class, or `unknown`, is ever inflated (on guests that really are
  inflation candidates most of the time, and really are under pressure some of the time: the
  tests count that both happen);
- `oom` and `thrashing` always deflate (unless at max);
- a constant workload never makes the controller change direction;
- on-demand: a shortfall inflation does not move costs at most itself plus one step per guest in
  any 10 minutes;
- guest-reported stats are untrusted: garbage never crashes anything, never escapes the
  bounds. In proactive mode it never changes another guest's decision. In on-demand mode the
  guests share the host's shortfall, and what a guest can influence is exactly this: by
  offering more or less spare memory it decides how much of the shortfall is left for the
  others, never more than if it had offered nothing. So a lying guest can make another guest
  give less, or later, never more or sooner.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoballoon.core.classify import CALM_CLASSES, PRESSURE_CLASSES, PressureClass
from autoballoon.core.decide import Action, EngineState, step
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.samples import (
    EXTENDED_STATS,
    KNOWN_STATS,
    MAX_SANE_VALUE,
    U64_ABSENT,
    GuestSample,
    HostSample,
    sanitize_guest_stats,
)
from autoballoon.core.units import BYTES_PER_MIB

HOST = HostSample(0, 24 << 20, 1 << 20)  # short on memory: on-demand takes too

policies = st.builds(
    GuestPolicy,
    mode=st.sampled_from(["on-demand", "proactive"]),
    floor_mib=st.integers(16, 2048),
    floor_ratio=st.floats(0, 1),
    max_mib=st.one_of(st.none(), st.integers(2048, 8192)),
    stable_s=st.floats(0, 30),
    cooldown_s=st.floats(0, 30),
    inflate_step_ratio=st.floats(0.01, 1),
    min_change_mib=st.integers(0, 64),
)

hostile_value = st.one_of(
    st.integers(-(2**70), 2**70),
    st.just(U64_ABSENT),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
hostile_stats = st.dictionaries(
    st.one_of(st.sampled_from(sorted(KNOWN_STATS)), st.text(max_size=12)), hostile_value
)


def guest(
    t: float,
    stats: dict[str, int],
    actual_kib: int,
    max_kib: int,
    name: str = "vm",
    last_update: int | None = None,
) -> GuestSample:
    return GuestSample(
        name,
        "u-" + name,
        t,
        actual_kib,
        max_kib,
        int(t) if last_update is None else last_update,
        stats,
    )


@given(raw=hostile_stats)
def test_sanitize_never_raises_and_keeps_only_plausible_integers(raw: dict) -> None:  # type: ignore[type-arg]
    clean, problems = sanitize_guest_stats(raw)
    assert set(clean) <= KNOWN_STATS
    assert all(type(v) is int and 0 <= v <= MAX_SANE_VALUE for v in clean.values())
    assert isinstance(problems, list)


def ceiling(hi: int, domain_max_kib: int, actual: int) -> int:
    """The most a target may be: the policy's maximum, or, for a guest still above it (a
    lowered ``max_mib``), what it has or the domain's maximum: it comes down as it spares."""
    return hi if actual <= hi else max(actual, domain_max_kib)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    policy=policies,
    max_mib=st.integers(256, 8192),
    start_ratio=st.floats(0.0, 1.5),
    ticks=st.lists(st.tuples(hostile_stats, st.integers(0, 3)), max_size=40),
)
def test_targets_stay_in_bounds_and_pressure_is_never_inflated(
    policy: GuestPolicy,
    max_mib: int,
    start_ratio: float,
    ticks: list,  # type: ignore[type-arg]
) -> None:
    pset = PolicySet(policy)
    max_kib = max_mib * 1024
    actual = int(max_kib * start_ratio)
    state = EngineState()
    now = 1000.0
    lo, hi = policy.floor_kib(max_kib), policy.max_kib(max_kib)
    for raw, dt in ticks:
        now += dt
        stats, _ = sanitize_guest_stats(raw)
        s = guest(now, stats, actual, max_kib)
        (d,), state = step(now, HOST, {"vm": s}, state, pset)
        if d.action is not Action.HOLD:
            assert lo <= d.target_kib <= ceiling(hi, max_kib, actual)
            actual = d.target_kib
        if d.action is Action.INFLATE:
            assert d.klass in CALM_CLASSES
        if d.klass in PRESSURE_CLASSES or d.klass is PressureClass.UNKNOWN:
            assert d.action is not Action.INFLATE


counter = st.integers(0, 10**12)


@settings(max_examples=150, deadline=None)
@given(
    policy=policies,
    klass=st.sampled_from(["oom", "thrashing"]),
    actual_ratio=st.floats(0.1, 1.0),
    base=st.tuples(counter, counter, counter, counter),
    gap=st.floats(1, 10),
)
def test_oom_and_thrashing_always_deflate_unless_at_max(
    policy: GuestPolicy, klass: str, actual_ratio: float, base: tuple[int, ...], gap: float
) -> None:
    max_kib = 4096 * 1024
    actual = max(int(max_kib * actual_ratio), 1024)
    oom, stalls, dscan, drclm = base
    common = {
        "stat-available-memory": 10 * BYTES_PER_MIB,
        "stat-async-scans": 0,
        "stat-async-reclaims": 0,
    }
    first = common | {
        "stat-oom-kills": oom,
        "stat-alloc-stalls": stalls,
        "stat-direct-scans": dscan,
        "stat-direct-reclaims": min(drclm, dscan),
    }
    if klass == "oom":
        second = first | {"stat-oom-kills": oom + 1}
    else:  # stalls and direct scanning high, almost nothing reclaimed
        second = first | {
            "stat-alloc-stalls": stalls + 1000,
            "stat-direct-scans": dscan + 1000 * BYTES_PER_MIB,
        }
    pset = PolicySet(policy)
    s1 = guest(1000.0, first, actual, max_kib)
    s2 = guest(1000.0 + gap, second, actual, max_kib)
    _, state = step(s1.t, HOST, {"vm": s1}, EngineState(), pset)
    (d,), _ = step(s2.t, HOST, {"vm": s2}, state, pset)
    assert d.klass == klass
    if actual >= ceiling(policy.max_kib(max_kib), max_kib, actual):
        assert d.action is Action.HOLD
    else:
        assert d.action is Action.DEFLATE
        assert d.target_kib > d.current_kib


@settings(max_examples=100, deadline=None)
@given(
    policy=policies,
    max_mib=st.integers(256, 8192),
    used_ratio=st.floats(0.0, 1.0),
    interval=st.sampled_from([1.0, 2.0, 5.0, 10.0]),
    follow=st.booleans(),
)
def test_constant_workload_never_changes_direction(
    policy: GuestPolicy, max_mib: int, used_ratio: float, interval: float, follow: bool
) -> None:
    """Closed loop (the balloon follows) or open loop (it never does, as in dry-run)."""
    pset = PolicySet(policy)
    max_kib = max_mib * 1024
    used_kib = int(max_kib * used_ratio)
    actual = max_kib
    state = EngineState()
    directions = []
    # long enough to walk from max to floor in the smallest steps, each after a cooldown
    settle_s = (1 / policy.inflate_step_ratio + 3) * (max(policy.cooldown_s, interval) + interval)
    settle_s += policy.stable_s + 60
    n = int(1.5 * settle_s / interval)
    last_change_t = None
    for i in range(n):
        now = 1000.0 + i * interval
        avail = max(actual - used_kib, 0) * 1024
        s = guest(
            now,
            {"stat-available-memory": avail} | dict.fromkeys(EXTENDED_STATS, 0),
            actual,
            max_kib,
        )
        (d,), state = step(now, HOST, {"vm": s}, state, pset, open_loop=not follow)
        if d.action is not Action.HOLD:
            directions.append(d.action)
            last_change_t = now - 1000.0
            if follow:
                actual = d.target_kib
    flips = sum(1 for a, b in zip(directions, directions[1:], strict=False) if a != b)
    assert flips == 0, directions
    if follow:
        assert last_change_t is None or last_change_t < settle_s, "it settles, then stays put"


def _isolation_run(
    mode: str, evil_stats: list[dict[str, int]], honest: dict[str, int], host: HostSample = HOST
) -> list[tuple[str, int]]:
    """The good guest's (action, target) per tick, next to a guest sending ``evil_stats``."""
    pset = PolicySet(GuestPolicy(mode=mode, stable_s=0, cooldown_s=0))  # type: ignore[arg-type]
    state = EngineState()
    out = []
    for i, stats in enumerate(evil_stats):
        now = 1000.0 + 2 * i
        samples = {
            "evil": guest(now, stats, 1 << 20, 1 << 20, name="evil"),
            "good": guest(now, honest, 1 << 20, 1 << 20, name="good"),
        }
        decisions, state = step(now, host, samples, state, pset)
        good = next(d for d in decisions if d.guest == "good")
        out.append((good.action.value, good.target_kib))
    return out


HONEST = {"stat-available-memory": 900 * BYTES_PER_MIB} | dict.fromkeys(EXTENDED_STATS, 0)
NO_SPARE = HONEST | {"stat-available-memory": 0}
SLIGHTLY_SHORT = HostSample(0, 24 << 20, int(0.2 * (24 << 20)) - 30 * 1024)
"""30 MiB short: one guest's take covers it."""


@settings(max_examples=100, deadline=None)
@given(garbage=st.lists(hostile_stats, min_size=3, max_size=15))
def test_a_hostile_guest_never_changes_another_guests_decisions(garbage: list) -> None:  # type: ignore[type-arg]
    lies = [sanitize_guest_stats(raw)[0] for raw in garbage]
    assert _isolation_run("proactive", lies, HONEST) == _isolation_run(
        "proactive", [HONEST] * len(lies), HONEST
    )


def test_a_lying_guest_can_only_leave_less_of_the_shortfall_to_others_on_demand() -> None:
    """On-demand: against a neighbour that offers nothing, the good guest's cumulative take
    is an upper bound on its take next to any neighbour, liar or not, at every tick."""
    seen: Counter[str] = Counter()

    @settings(max_examples=100, deadline=None)
    @given(
        garbage=st.lists(
            st.one_of(hostile_stats, st.just(HONEST), st.just(NO_SPARE)), min_size=3, max_size=40
        )
    )
    def prop(garbage: list) -> None:  # type: ignore[type-arg]
        lies = [sanitize_guest_stats(raw)[0] for raw in garbage]
        with_liar = _isolation_run("on-demand", lies, HONEST, SLIGHTLY_SHORT)
        alone = _isolation_run("on-demand", [NO_SPARE] * len(lies), HONEST, SLIGHTLY_SHORT)
        taken_liar = taken_alone = 0
        for (act_l, target_l), (act_a, target_a) in zip(with_liar, alone, strict=True):
            taken_liar += (1 << 20) - target_l if act_l == "inflate" else 0
            taken_alone += (1 << 20) - target_a if act_a == "inflate" else 0
            assert act_l != "deflate" and act_a != "deflate"
            assert taken_liar <= taken_alone
        seen["examples"] += 1
        seen["less"] += taken_liar < taken_alone

    prop()
    # the bound is not vacuous: a liar does take the shortfall away from the good guest
    assert seen["less"] >= 0.05 * seen["examples"], seen
    # a neighbour offering more is asked first; the good guest waits until that is judged
    generous = [HONEST | {"stat-available-memory": 1000 * BYTES_PER_MIB}] * 5
    with_liar = _isolation_run("on-demand", generous, HONEST, SLIGHTLY_SHORT)
    alone = _isolation_run("on-demand", [NO_SPARE] * 5, HONEST, SLIGHTLY_SHORT)
    assert "inflate" not in [a for a, _ in with_liar] and "inflate" in [a for a, _ in alone]


def test_stale_guest_gives_memory_back_not_takes() -> None:
    pset = PolicySet(GuestPolicy(mode="proactive"))
    s = guest(1000.0, {"stat-available-memory": 900 * BYTES_PER_MIB}, 512 * 1024, 1 << 20)
    state = EngineState()
    actions = []
    for i in range(30):
        now = 1000.0 + 2 * i
        (d,), state = step(now, HOST, {"vm": replace(s, t=now)}, state, pset)
        actions.append(d.action)
    assert d.klass is PressureClass.UNKNOWN
    assert Action.INFLATE not in actions
    assert Action.DEFLATE in actions


@st.composite
def sane_policies(
    draw: st.DrawFn, modes: tuple[str, ...] = ("on-demand", "proactive")
) -> GuestPolicy:
    """Valid policies with headroom and low-water varied (low-water below headroom in both the
    MiB and the ratio, so their dead band stays open at every size)."""
    headroom_mib = draw(st.integers(0, 200))
    low_water_mib = draw(st.integers(0, max(headroom_mib - 1, 0)))
    headroom_ratio = draw(st.floats(0.0, 0.4))
    low_water_ratio = draw(st.floats(0.0, max(headroom_ratio - 0.01, 0.0)))
    if low_water_mib >= headroom_mib and low_water_ratio >= headroom_ratio:
        headroom_mib = low_water_mib + 1
    return GuestPolicy(
        mode=draw(st.sampled_from(modes)),  # type: ignore[arg-type]
        headroom_mib=headroom_mib,
        low_water_mib=low_water_mib,
        headroom_ratio=headroom_ratio,
        low_water_ratio=low_water_ratio,
        floor_mib=draw(st.integers(16, 256)),
        floor_ratio=draw(st.floats(0.0, 0.5)),
        stable_s=draw(st.floats(0, 20)),
        cooldown_s=draw(st.floats(0, 20)),
        inflate_step_ratio=draw(st.floats(0.02, 0.3)),
        min_change_mib=draw(st.integers(0, 16)),
    )


class Workload:
    """A guest that follows its balloon: ``used_mib`` per phase; when it is short of memory its
    pressure counters rise (stalls and direct scanning, sometimes an OOM kill)."""

    def __init__(self, max_mib: int, phases: list[tuple[int, int]]) -> None:
        self.max_kib = max_mib * 1024
        self.actual_kib = self.max_kib
        self.phases = phases  # (ticks, used MiB)
        self.counters = dict.fromkeys(EXTENDED_STATS, 0)

    def used_kib(self, i: int) -> int:
        for ticks, used in self.phases:
            if i < ticks:
                return used * 1024
            i -= ticks
        return self.phases[-1][1] * 1024

    def read(self, now: float, i: int, name: str) -> GuestSample:
        avail_kib = self.actual_kib - self.used_kib(i)
        if avail_kib < self.actual_kib // 10:  # short: the kernel reclaims, stalls, maybe kills
            self.counters["stat-alloc-stalls"] += 20
            self.counters["stat-direct-scans"] += 50 * BYTES_PER_MIB
            self.counters["stat-direct-reclaims"] += 5 * BYTES_PER_MIB
            if avail_kib <= 0:
                self.counters["stat-oom-kills"] += 1
        stats = dict(self.counters) | {"stat-available-memory": max(avail_kib, 0) * 1024}
        return guest(now, stats, self.actual_kib, self.max_kib, name=name)


workloads = st.builds(
    Workload,
    max_mib=st.integers(512, 4096),
    phases=st.lists(st.tuples(st.integers(5, 60), st.integers(50, 4096)), min_size=1, max_size=4),
)


def test_real_candidates_inflate_and_pressure_never_does() -> None:
    """Closed loop, 1-3 guests, both modes: bounds hold, pressure and `unknown` never inflate,
    and the interesting cases occur (counted)."""
    seen: Counter[str] = Counter()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(policy=sane_policies(), loads=st.lists(workloads, min_size=1, max_size=3))
    def prop(policy: GuestPolicy, loads: list[Workload]) -> None:
        pset = PolicySet(policy)
        state = EngineState()
        inflated = False
        for i in range(120):
            now = 1000.0 + 2 * i
            samples = {f"g{k}": w.read(now, i, f"g{k}") for k, w in enumerate(loads)}
            decisions, state = step(now, HOST, samples, state, pset)
            for w, d in zip(loads, decisions, strict=True):
                seen["ticks"] += 1
                seen[d.klass] += 1
                if d.action is Action.HOLD:
                    continue
                top = ceiling(policy.max_kib(w.max_kib), w.max_kib, w.actual_kib)
                assert policy.floor_kib(w.max_kib) <= d.target_kib <= top
                if d.action is Action.INFLATE:
                    assert d.klass is PressureClass.NONE, d
                    inflated = True
                w.actual_kib = d.target_kib
        seen["examples"] += 1
        seen["inflated"] += inflated

    prop()
    assert seen["inflated"] >= 0.5 * seen["examples"], seen
    pressure = sum(seen[k] for k in PRESSURE_CLASSES)
    assert pressure >= 0.02 * seen["ticks"], seen
    assert seen[PressureClass.UNKNOWN] <= 0.05 * seen["ticks"], seen


def test_on_demand_never_asks_more_than_the_shortfall_plus_a_step_per_guest() -> None:
    """A host short by S that inflation does not move, 1-5 guests, 20 minutes: no 10-minute
    window asks more than S plus one inflate step per guest."""
    seen: Counter[str] = Counter()

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        policy=sane_policies(modes=("on-demand",)),
        sizes=st.lists(st.integers(512, 4096), min_size=1, max_size=5),
        used_ratio=st.floats(0.05, 0.6),
        short_mib=st.integers(8, 3000),
        rss_known=st.booleans(),
    )
    def prop(
        policy: GuestPolicy, sizes: list[int], used_ratio: float, short_mib: int, rss_known: bool
    ) -> None:
        total = 24 << 20
        host = HostSample(0, total, int(0.2 * total) - short_mib * 1024)
        pset = PolicySet(policy)
        loads = [Workload(m, [(1, int(m * used_ratio))]) for m in sizes]
        state = EngineState()
        asked: list[tuple[float, int]] = []
        for i in range(600):
            now = 1000.0 + 2 * i
            samples = {}
            for k, w in enumerate(loads):
                s = w.read(now, i, f"g{k}")
                samples[s.name] = replace(s, rss_kib=w.max_kib if rss_known else None)
            decisions, state = step(now, host, samples, state, pset)
            for w, d in zip(loads, decisions, strict=True):
                if d.action is Action.INFLATE:
                    asked.append((now, d.current_kib - d.target_kib))
                if d.action is not Action.HOLD:
                    w.actual_kib = d.target_kib
        steps = sum(int(policy.inflate_step_ratio * policy.max_kib(w.max_kib)) for w in loads)
        for t0, _ in asked:
            window = sum(k for t, k in asked if t0 <= t < t0 + 600)
            assert window <= short_mib * 1024 + steps
        seen["examples"] += 1
        seen["asked"] += bool(asked)
        seen["verdict said so"] += "cannot free more" in (state.host_verdict or "")

    prop()
    assert seen["asked"] >= 0.5 * seen["examples"], seen
    assert seen["verdict said so"] >= 0.3 * seen["examples"], seen
