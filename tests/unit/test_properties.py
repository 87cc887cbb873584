"""Invariants of the pure core, as hypothesis properties.

- every target the engine acts on is within [floor, max];
- no guest in a pressure class, or `unknown`, is ever inflated;
- `oom` and `thrashing` always deflate (unless at max);
- a constant workload never makes the controller change direction;
- guest-reported stats are untrusted: garbage never crashes anything, never escapes the
  bounds, and never changes another guest's decision.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoballoon.core.classify import PRESSURE_CLASSES, PressureClass
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
            assert lo <= d.target_kib <= hi
            actual = d.target_kib
        if d.action is Action.INFLATE:
            assert d.klass is PressureClass.NONE
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
    if actual >= policy.max_kib(max_kib):
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


@settings(max_examples=100, deadline=None)
@given(garbage=st.lists(hostile_stats, min_size=3, max_size=15))
def test_a_hostile_guest_never_changes_another_guests_decisions(garbage: list) -> None:  # type: ignore[type-arg]
    pset = PolicySet(GuestPolicy(mode="proactive", stable_s=0, cooldown_s=0))
    honest = {"stat-available-memory": 900 * BYTES_PER_MIB} | dict.fromkeys(EXTENDED_STATS, 0)

    def run(with_garbage: bool) -> list[tuple[str, int]]:
        state = EngineState()
        out = []
        for i, raw in enumerate(garbage):
            now = 1000.0 + 2 * i
            stats, _ = sanitize_guest_stats(raw if with_garbage else honest)
            samples = {
                "evil": guest(now, stats, 1 << 20, 1 << 20, name="evil"),
                "good": guest(now, honest, 1 << 20, 1 << 20, name="good"),
            }
            decisions, state = step(now, HOST, samples, state, pset)
            good = next(d for d in decisions if d.guest == "good")
            out.append((good.action.value, good.target_kib))
        return out

    assert run(True) == run(False)


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
