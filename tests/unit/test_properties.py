"""Invariants of the pure core, as hypothesis properties.

Each property counts the cases that make it worth running and asserts that they occur (the
counting ones run from a fixed seed, so a share cannot flake):

- every target the engine acts on is within [floor, max], whatever the guest sends;
- on realistic trajectories (counters that grow, MemAvailable that moves, reports that
  advance or go stale), through every class: no guest in `unknown` or a pressure class is
  inflated, with one documented exception, `kswapd-reclaim` right after our own inflation (the
  kswapd echo), asserted as such; a rescue class always deflates unless at max;
- `oom` and `thrashing` always deflate (unless at max);
- a constant workload deflates first, then inflates, never back and forth;
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

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from autoballoon.core.classify import PRESSURE_CLASSES, PressureClass
from autoballoon.core.decide import RESCUE_CLASSES, Action, EngineState, step
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

SEED = 20261205
"""The counting properties run from a fixed seed: the shares they assert cannot flake in CI.
(Hypothesis also draws constants from the modules loaded, so the examples differ between a
run of one file and of the whole suite: the shares asserted keep a margin for that; they
held for six other seeds.)"""

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


def test_sanitize_never_raises_and_keeps_only_plausible_integers() -> None:
    seen: Counter[str] = Counter()

    @seed(SEED)
    @settings(database=None)
    @given(raw=hostile_stats)
    def prop(raw: dict) -> None:  # type: ignore[type-arg]
        clean, problems = sanitize_guest_stats(raw)
        assert set(clean) <= KNOWN_STATS
        assert all(type(v) is int and 0 <= v <= MAX_SANE_VALUE for v in clean.values())
        assert isinstance(problems, list)
        seen["examples"] += 1
        seen["kept"] += bool(clean)
        seen["rejected"] += bool(problems)

    prop()
    # both halves of the gate work: some values pass, some are named as problems
    assert seen["kept"] >= 0.1 * seen["examples"], seen
    assert seen["rejected"] >= 0.2 * seen["examples"], seen


def ceiling(hi: int, domain_max_kib: int, actual: int) -> int:
    """The most a target may be: the policy's maximum, or, for a guest still above it (a
    lowered ``max_mib``), what it has or the domain's maximum: it comes down as it spares."""
    return hi if actual <= hi else max(actual, domain_max_kib)


def test_targets_stay_in_bounds_whatever_the_guest_sends() -> None:
    """Garbage statistics, from any starting size: whatever is decided stays within [floor,
    max]. (That pressure is never inflated is the trajectory property below: garbage is almost
    always ``unknown``.) Counted: changes are made, some to the floor (a guest started below
    it)."""
    seen: Counter[str] = Counter()

    @seed(SEED)
    @settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None,
              database=None)
    @given(
        policy=policies,
        max_mib=st.integers(256, 8192),
        start_ratio=st.floats(0.0, 1.5),
        ticks=st.lists(st.tuples(hostile_stats, st.integers(0, 3)), min_size=1, max_size=40),
    )
    def prop(
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
                seen["changes"] += 1
                seen["to the floor"] += d.target_kib == lo
            if d.klass is PressureClass.UNKNOWN:
                assert d.action is not Action.INFLATE
        seen["examples"] += 1

    prop()
    assert seen["changes"] >= 0.1 * seen["examples"], seen
    assert seen["to the floor"] >= 5, seen


counter = st.integers(0, 10**12)


def test_oom_and_thrashing_always_deflate_unless_at_max() -> None:
    seen: Counter[str] = Counter()

    @seed(SEED)
    @settings(max_examples=150, deadline=None, database=None)
    @given(
        policy=policies,
        klass=st.sampled_from(["oom", "thrashing"]),
        actual_ratio=st.one_of(st.just(1.0), st.floats(0.1, 1.0)),  # at the maximum, or under
        base=st.tuples(counter, counter, counter, counter),
        gap=st.floats(1, 10),
    )
    def prop(
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
            seen[f"{klass} at max"] += 1
        else:
            assert d.action is Action.DEFLATE
            assert d.target_kib > d.current_kib
            seen[f"{klass} deflated"] += 1

    prop()
    for case in ("oom at max", "oom deflated", "thrashing at max", "thrashing deflated"):
        assert seen[case] >= 5, seen


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


def test_a_hostile_guest_never_changes_another_guests_decisions() -> None:
    seen: Counter[str] = Counter()

    @seed(SEED)
    @settings(max_examples=100, deadline=None, database=None)
    @given(garbage=st.lists(hostile_stats, min_size=3, max_size=15))
    def prop(garbage: list) -> None:  # type: ignore[type-arg]
        lies = [sanitize_guest_stats(raw)[0] for raw in garbage]
        assert _isolation_run("proactive", lies, HONEST) == _isolation_run(
            "proactive", [HONEST] * len(lies), HONEST
        )
        seen["examples"] += 1
        seen["lies got through"] += any(lies)  # some values passed the gate

    prop()
    # About half get through: 51 of 100 with this seed alone, 49 after the other unit tests
    # (the examples drawn depend on what ran before); 40 % is the bound, off that edge.
    assert seen["lies got through"] >= 0.4 * seen["examples"], seen


GENEROUS = HONEST | {"stat-available-memory": 1000 * BYTES_PER_MIB}


def test_a_lying_guest_can_only_leave_less_of_the_shortfall_to_others_on_demand() -> None:
    """On-demand: against a neighbour that offers nothing, the good guest's cumulative take
    is an upper bound on its take next to any neighbour, liar or not, at every tick."""
    seen: Counter[str] = Counter()

    @seed(SEED)
    @settings(max_examples=100, deadline=None, database=None)
    @given(
        garbage=st.lists(
            # garbage, honest figures, nothing spare, or a liar claiming 1000 MiB spare (the
            # case that takes the shortfall away from the good guest)
            st.one_of(hostile_stats, st.just(HONEST), st.just(NO_SPARE), st.just(GENEROUS)),
            min_size=3, max_size=40,
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
    generous = [GENEROUS] * 5
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


def test_constant_workload_deflates_then_inflates_never_back_and_forth() -> None:
    """A constant workload, from any starting size, closed loop (the balloon follows) or open
    loop (it never does, as in dry-run). Deflations come first (back to the floor, or out of
    low water); a rescue's overshoot may be taken back by inflations, but only once
    ``pressure_block_s`` has passed; after an inflation nothing is ever deflated. So the
    direction changes at most once, and the counts show both directions and that change."""
    seen: Counter[str] = Counter()

    @seed(SEED)
    @settings(max_examples=100, deadline=None, database=None)
    @given(
        policy=st.one_of(sane_policies(), policies),
        max_mib=st.integers(256, 8192),
        used_ratio=st.floats(0.0, 0.8),
        # of the maximum: at the maximum (None), near the need, or just under low water
        start_over_used=st.one_of(st.none(), st.floats(-0.1, 0.1), st.floats(0.0, 0.03)),
        interval=st.sampled_from([1.0, 2.0, 5.0, 10.0]),
        follow=st.booleans(),
    )
    def prop(
        policy: GuestPolicy,
        max_mib: int,
        used_ratio: float,
        start_over_used: float | None,
        interval: float,
        follow: bool,
    ) -> None:
        pset = PolicySet(policy)
        max_kib = max_mib * 1024
        used_kib = int(max_kib * used_ratio)
        start = 1.0 if start_over_used is None else used_ratio + start_over_used
        actual = min(max(int(max_kib * start), 1024), max_kib)
        state = EngineState()
        changes: list[tuple[Action, float, str]] = []
        # long enough to walk from max to floor in the smallest steps, each after a cooldown,
        # after a rescue's block
        gap_s = max(policy.cooldown_s, interval) + interval
        settle_s = (1 / policy.inflate_step_ratio + 3) * gap_s
        settle_s += policy.stable_s + policy.pressure_block_s + 60
        for i in range(int(1.5 * settle_s / interval)):
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
                changes.append((d.action, now - 1000.0, d.rule))
                if follow:
                    actual = d.target_kib
        actions = [a for a, _, _ in changes]
        first_inflate = actions.index(Action.INFLATE) if Action.INFLATE in actions else None
        if first_inflate is not None:
            assert Action.DEFLATE not in actions[first_inflate:], changes
            rescues = [t for a, t, r in changes[:first_inflate] if r != "below-floor"]
            if rescues:
                assert changes[first_inflate][1] - rescues[-1] >= policy.pressure_block_s, changes
        if follow and changes:
            assert changes[-1][1] < settle_s, "it settles, then stays put"
        seen["examples"] += 1
        seen["acted"] += bool(changes)
        seen["deflated"] += Action.DEFLATE in actions
        seen["inflated"] += first_inflate is not None
        seen["turned"] += Action.DEFLATE in actions and first_inflate is not None

    prop()
    n = seen["examples"]
    assert seen["acted"] >= 0.5 * n, seen
    assert seen["deflated"] >= 0.15 * n, seen
    assert seen["inflated"] >= 0.1 * n, seen
    # The one change of direction is rare here (0 to 18 % of examples by the seed): it is
    # checked whenever it occurs, and reached on purpose in test_decide's
    # test_a_low_water_overshoot_is_taken_back_only_after_the_block.


def test_real_candidates_inflate_and_pressure_never_does() -> None:
    """Closed loop, 1-3 guests, both modes: bounds hold, pressure and `unknown` never inflate,
    and the interesting cases occur (counted)."""
    seen: Counter[str] = Counter()

    @seed(SEED)
    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
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

    @seed(SEED)
    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
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
        seen["verdict said so"] += state.host_verdict is not None and state.host_verdict.stuck

    prop()
    assert seen["asked"] >= 0.5 * seen["examples"], seen
    assert seen["verdict said so"] >= 0.3 * seen["examples"], seen


# --- realistic trajectories: every pressure class, and inflation, really occur ---------------

MIB = BYTES_PER_MIB
BEHAVIOURS: dict[str, dict[str, float]] = {
    # cumulative counters added per second of the phase (bytes for scans and reclaims)
    "idle": {},
    "kswapd": {"stat-async-scans": 20 * MIB, "stat-async-reclaims": 15 * MIB},
    "struggling": {"stat-async-scans": 20 * MIB, "stat-async-reclaims": 1 * MIB},
    "stalling": {"stat-alloc-stalls": 2, "stat-direct-scans": 0.1 * MIB},
    "starving": {"stat-alloc-stalls": 2, "stat-direct-scans": 0.1 * MIB},  # nothing available
    "global": {"stat-alloc-stalls": 2, "stat-direct-scans": 20 * MIB,
               "stat-direct-reclaims": 15 * MIB},
    "thrashing": {"stat-alloc-stalls": 2, "stat-direct-scans": 20 * MIB,
                  "stat-direct-reclaims": 1 * MIB},
    "oom": {"stat-oom-kills": 0.5, "stat-alloc-stalls": 3},
    "cgroup-oom": {"stat-oom-kills": 0.5},
    "light": {"stat-direct-scans": 0.05 * MIB},
    "cache": {},  # idle, but kswapd reclaims page cache for 10 s after each inflation
    "stale": {},  # the guest stops reporting: last_update stands still
    "blind": {},  # reports without MemAvailable or MemFree
}
"""What each phase of a generated guest does: ``classify`` names a class for each (``stalling``
is ``running-out`` or ``cgroup-stall`` by the available memory)."""


class Trajectory:
    """A closed-loop guest through phases: counters only grow, MemAvailable is its balloon size
    minus its working set (which moves per phase), and ``last_update`` advances with each
    report, except while it is stale."""

    def __init__(self, max_mib: int, start_ratio: float, phases: list[tuple[str, int, float]],
                 dts: list[int]) -> None:
        self.max_kib = max_mib * 1024
        self.actual_kib = max(int(self.max_kib * start_ratio), 1024)
        self.phases = phases  # (behaviour, ticks, working set as a share of the maximum)
        self.dts = dts
        self.counters = dict.fromkeys(EXTENDED_STATS, 0.0)
        self.last_update = 0
        self.last_size_kib = self.actual_kib
        self.squeezed_t = -1e9

    def ticks(self) -> list[tuple[str, float]]:
        """(behaviour, working set KiB) per tick."""
        return [(b, ratio * self.max_kib) for b, n, ratio in self.phases for _ in range(n)]

    def read(self, now: float, dt: float, behaviour: str, used_kib: float) -> GuestSample:
        if self.actual_kib < self.last_size_kib:
            self.squeezed_t = now
        self.last_size_kib = self.actual_kib
        if behaviour == "cache" and now - self.squeezed_t <= 10:
            behaviour = "kswapd"
        for name, per_s in BEHAVIOURS[behaviour].items():
            self.counters[name] += per_s * dt
        if behaviour != "stale":
            self.last_update = int(now)
        avail_kib = 0 if behaviour == "starving" else max(self.actual_kib - int(used_kib), 0)
        stats = {k: int(v) for k, v in self.counters.items()}
        if behaviour != "blind":
            stats["stat-available-memory"] = avail_kib * 1024
            stats["stat-free-memory"] = avail_kib * 1024 // 2
        return guest(now, stats, self.actual_kib, self.max_kib, last_update=self.last_update)


@st.composite
def trajectories(draw: st.DrawFn) -> Trajectory:
    """Calm first, long enough to be inflated; then a few distinct behaviours in any order
    (a permutation: over the examples every behaviour is drawn about as often)."""
    order = draw(st.permutations(sorted(BEHAVIOURS)))[: draw(st.integers(2, 6))]
    first = (draw(st.sampled_from(["idle", "cache"])), draw(st.integers(10, 40)),
             draw(st.floats(0.05, 0.6)))
    # a working set above 1 is larger than the guest's maximum
    rest = [(b, draw(st.integers(3, 30)), draw(st.floats(0.05, 1.2))) for b in order]
    return Trajectory(
        max_mib=draw(st.integers(512, 4096)),
        start_ratio=draw(st.floats(0.3, 1.0)),
        phases=[first, *rest],
        dts=draw(st.lists(st.sampled_from([1, 2, 5]), min_size=1, max_size=5)),
    )


MAY_INFLATE = frozenset({PressureClass.NONE, PressureClass.CGROUP_OOM})
"""The calm classes, as the README states them (not read from the code under test)."""
UNDER_PRESSURE = frozenset(PressureClass) - MAY_INFLATE - {PressureClass.UNKNOWN}
UNKNOWN_RULES = frozenset({"below-floor", "stale", "unknown"})
"""The rules that may decide for an ``unknown`` guest: its figures are not used."""
PRESSURE_RULES = frozenset({"rescue", "below-floor", "low-water", "under-pressure"})
"""The rules that may decide for a guest in a pressure class (but the kswapd echo)."""


def test_pressure_is_never_inflated_on_realistic_trajectories() -> None:
    """Closed loop, guests whose counters grow and whose MemAvailable moves: every target in
    [floor, max]; no inflation in ``unknown`` or any pressure class but ``kswapd-reclaim``; that
    one only as the documented kswapd echo (within ``cooldown_s + rate_window_s`` of our own
    inflation); a rescue class always deflates unless at max. The counts below show that every
    class, inflation and the echo really occur."""
    seen: Counter[str] = Counter()

    @seed(SEED)
    @settings(max_examples=120, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(policy=sane_policies(), g=trajectories())
    def prop(policy: GuestPolicy, g: Trajectory) -> None:
        pset = PolicySet(policy)
        state = EngineState()
        lo, hi = policy.floor_kib(g.max_kib), policy.max_kib(g.max_kib)
        echo_s = policy.cooldown_s + policy.rate_window_s
        now, last_inflate_t, inflated, echoed = 1000.0, None, False, False
        for i, (behaviour, used_kib) in enumerate(g.ticks()):
            dt = g.dts[i % len(g.dts)]
            now += dt
            (d,), state = step(now, HOST, {"vm": g.read(now, dt, behaviour, used_kib)}, state, pset)
            seen["ticks"] += 1
            seen[d.klass] += 1
            if d.action is not Action.HOLD:
                assert lo <= d.target_kib <= hi, d
            echo = last_inflate_t is not None and now - last_inflate_t <= echo_s
            if d.klass in RESCUE_CLASSES:
                assert d.action is Action.DEFLATE or d.current_kib >= hi, d
            elif d.klass is PressureClass.UNKNOWN:
                assert d.rule in UNKNOWN_RULES, d
            elif d.klass in UNDER_PRESSURE and not (
                d.klass is PressureClass.KSWAPD_RECLAIM and echo
            ):
                assert d.rule in PRESSURE_RULES, d
            if d.action is Action.INFLATE:
                assert d.klass in MAY_INFLATE or d.klass is PressureClass.KSWAPD_RECLAIM, d
                if d.klass is PressureClass.KSWAPD_RECLAIM:
                    assert echo, d
                    assert d.rule.startswith("take-"), d
                    seen["echo inflations"] += 1
                    echoed = True
                inflated = True
                last_inflate_t = now
            elif d.action is Action.DEFLATE:
                last_inflate_t = None
            if d.action is not Action.HOLD:
                g.actual_kib = d.target_kib
        seen["examples"] += 1
        seen["inflated"] += inflated
        seen["echoed"] += echoed

    prop()
    n, ticks = seen["examples"], seen["ticks"]
    assert seen["inflated"] >= 0.3 * n, seen
    assert seen["echoed"] >= 3, seen  # the one exception is reached, and checked
    for klass in PressureClass:  # every class, each in at least 0.5 % of the ticks
        assert seen[klass] >= 0.005 * ticks, (klass, seen)
    assert seen[PressureClass.UNKNOWN] <= 0.2 * ticks, seen
