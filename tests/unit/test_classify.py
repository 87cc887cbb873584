"""The seed's pressure matrix as a table: each row is two samples 10 s apart."""

from __future__ import annotations

import pytest

from autoballoon.core.classify import Basis, PressureClass, classify
from autoballoon.core.policy import GuestPolicy
from tests.factories import sample

P = GuestPolicy()  # stall h >= 0.2/s, dscan h >= 1 MiB/s, ascan h >= 4 MiB/s, efficiency 0.3

# (what changed over 10 s, expected class). Names follow the seed's letters. Both samples have
# 100 MiB available of 1024 MiB: above the low-water mark (72 MiB), under the headroom (154 MiB).
MATRIX = [
    pytest.param({"oom": 1, "stalls": 1}, PressureClass.OOM, id="OOM[y] STALL[y] -> oom"),
    pytest.param(
        {"oom": 1, "stalls": 50, "dscan_mib": 80, "drclm_mib": 2},
        PressureClass.OOM,
        id="OOM[y] wins over everything",
    ),
    pytest.param(
        {"oom": 1},
        PressureClass.CGROUP_OOM,
        id="OOM[y] STALL[n] available above low water -> cgroup-oom",
    ),
    pytest.param(
        {"stalls": 20, "dscan_mib": 2, "drclm_mib": 0.5},
        PressureClass.RUNNING_OUT,
        id="STALL[h] DSCAN[l] DRCLM[l] under the headroom -> running-out",
    ),
    pytest.param(
        {"stalls": 20, "dscan_mib": 0, "drclm_mib": 0},
        PressureClass.RUNNING_OUT,
        id="STALL[h] DSCAN[n] under the headroom -> running-out",
    ),
    pytest.param(
        {"stalls": 20, "dscan_mib": 100, "drclm_mib": 80, "ascan_mib": 500},
        PressureClass.GLOBAL_RECLAIM,
        id="STALL[h] DSCAN[h] DRCLM[h] -> global-reclaim",
    ),
    pytest.param(
        {"stalls": 20, "dscan_mib": 100, "drclm_mib": 5},
        PressureClass.THRASHING,
        id="STALL[h] DSCAN[h] DRCLM[l] -> thrashing",
    ),
    pytest.param(
        {"ascan_mib": 200, "arclm_mib": 10},
        PressureClass.RECLAIM_STRUGGLING,
        id="STALL[n] ASCAN[h] DSCAN[n] ARCLM[l] -> reclaim-struggling",
    ),
    pytest.param(
        {"ascan_mib": 200, "arclm_mib": 180},
        PressureClass.KSWAPD_RECLAIM,
        id="matrix silent: STALL[n] ASCAN[h] DSCAN[n] ARCLM[h] -> kswapd-reclaim",
    ),
    pytest.param(
        {"stalls": 1, "dscan_mib": 0.5, "drclm_mib": 0.4},
        PressureClass.LIGHT_PRESSURE,
        id="matrix silent: STALL[l] DSCAN[l] -> light-pressure",
    ),
    pytest.param(
        {"ascan_mib": 20, "arclm_mib": 1},
        PressureClass.NONE,
        id="ASCAN[l] alone -> none",
    ),
    pytest.param({}, PressureClass.NONE, id="nothing moves -> none"),
]


@pytest.mark.parametrize(("delta", "expected"), MATRIX)
def test_seed_matrix(delta: dict[str, float], expected: PressureClass) -> None:
    base = dict(oom=3, stalls=100, ascan_mib=1000, dscan_mib=50, arclm_mib=900, drclm_mib=40)
    newer = {k: base.get(k, 0) + delta.get(k, 0) for k in base | delta}
    history = [sample(100, avail_mib=100, **base), sample(110, avail_mib=100, **newer)]  # type: ignore[arg-type]
    got = classify(history, P, now=110.5)
    assert got.klass is expected, got.reason
    assert got.basis is Basis.EXTENDED


# What Linux 6.12 counts: an OOM kill inside a memory cgroup is in OOM_KILL but its reclaim is not
# in ALLOCSTALL; the page allocator always reclaims (and counts a stall) before a global kill.
# (available MiB in the three samples 5 s apart, counters added at the last one, expected class)
# A 1024 MiB guest: low water 72 MiB, headroom 154 MiB.
TRUTH = [
    pytest.param((600, 600, 600), {"oom": 3}, PressureClass.CGROUP_OOM, id="cgroup kills, plenty"),
    pytest.param(
        (80, 80, 80), {"oom": 1}, PressureClass.CGROUP_OOM, id="cgroup kill, just above low water"
    ),
    pytest.param(
        (600, 600, 600), {"oom": 1, "stalls": 1}, PressureClass.OOM, id="a stall: the guest's own"
    ),
    pytest.param(
        (600, 10, 500), {"oom": 1}, PressureClass.OOM, id="ran out, then the victim's memory freed"
    ),
    pytest.param((60, 60, 60), {"oom": 1}, PressureClass.OOM, id="kill under low water"),
    pytest.param(
        (100, 100, 100), {"stalls": 20}, PressureClass.RUNNING_OUT, id="stalls, no scan, short"
    ),
    pytest.param(
        (40, 20, 5),
        {"stalls": 40, "dscan_mib": 0.5, "drclm_mib": 0.4},
        PressureClass.RUNNING_OUT,
        id="swapless exhaustion",
    ),
    pytest.param(
        (600, 600, 600),
        {"stalls": 20},
        PressureClass.CGROUP_STALL,
        id="stalls, no scan, plenty available",
    ),
    pytest.param(
        (20, 20, 20),
        {"stalls": 20, "dscan_mib": 100, "drclm_mib": 80},
        PressureClass.GLOBAL_RECLAIM,
        id="stalls with effective scan: global reclaim, not running out",
    ),
]


@pytest.mark.parametrize(("available", "delta", "expected"), TRUTH)
def test_what_612_counts(
    available: tuple[int, int, int], delta: dict[str, float], expected: PressureClass
) -> None:
    a, b, c = available
    history = [
        sample(100, avail_mib=a),
        sample(105, avail_mib=b),
        sample(110, avail_mib=c, **delta),
    ]  # type: ignore[arg-type]
    got = classify(history, P, now=110.5)
    assert got.klass is expected, got.reason


def test_the_kill_evidence_window_starts_at_our_last_change() -> None:
    # Available was low before our last change (a deflate): the kill after it, without a stall,
    # on a guest with memory available since, is a cgroup's.
    history = [
        sample(100, avail_mib=10),
        sample(105, avail_mib=400),
        sample(110, avail_mib=400, oom=1),
    ]
    assert classify(history, P, now=110.5).klass is PressureClass.OOM
    got = classify(history, P, now=110.5, since_t=106)
    assert got.klass is PressureClass.CGROUP_OOM, got.reason


@pytest.mark.parametrize(
    ("history", "now", "why"),
    [
        pytest.param([], 10, "no sample", id="no samples"),
        pytest.param([sample(100)], 100.5, "two samples", id="a single sample"),
        pytest.param(
            [sample(100), sample(110, last_update=0)], 110.5, "no statistics", id="never reported"
        ),
        pytest.param(
            [sample(100), sample(110, last_update=95)],
            110.5,
            "stale",
            id="last-update stopped advancing",
        ),
    ],
)
def test_unknown(history: list, now: float, why: str) -> None:
    got = classify(history, P, now=now)
    assert got.klass is PressureClass.UNKNOWN
    assert why in got.reason


def test_available_missing_is_unknown() -> None:
    s1, s2 = sample(100), sample(110)
    bare = {
        k: v for k, v in s2.stats.items() if k not in ("stat-available-memory", "stat-free-memory")
    }
    from dataclasses import replace

    got = classify([s1, replace(s2, stats=bare)], P, now=110.5)
    assert got.klass is PressureClass.UNKNOWN


def test_counter_drop_is_a_reboot_not_a_negative_rate() -> None:
    history = [sample(100, oom=5, stalls=500), sample(105, oom=0, stalls=0), sample(110)]
    got = classify(history, P, now=110.5)
    assert got.klass is PressureClass.NONE
    assert got.rates is not None and got.rates.alloc_stalls == 0


def test_evidence_before_our_last_change_is_not_counted_again() -> None:
    history = [sample(100), sample(105, oom=1, stalls=1), sample(110, oom=1, stalls=1)]
    assert classify(history, P, now=110.5).klass is PressureClass.OOM
    assert classify(history, P, now=110.5, since_t=106).klass is PressureClass.NONE


@pytest.mark.parametrize(
    ("delta", "avail_mib", "expected"),
    [
        pytest.param({"majflt": 2000}, 20, PressureClass.THRASHING, id="faults + low available"),
        pytest.param({"majflt": 2000}, 600, PressureClass.NONE, id="faults, plenty available"),
        pytest.param({"swap_in_mib": 50}, 600, PressureClass.GLOBAL_RECLAIM, id="swap-in high"),
        pytest.param({}, 600, PressureClass.NONE, id="quiet"),
    ],
)
def test_standard_stats_only(
    delta: dict[str, float], avail_mib: int, expected: PressureClass
) -> None:
    history = [
        sample(100, extended=False, avail_mib=avail_mib),
        sample(110, extended=False, avail_mib=avail_mib, **delta),  # type: ignore[arg-type]
    ]
    got = classify(history, P, now=110.5)
    assert got.klass is expected
    assert got.basis is Basis.STANDARD


@pytest.mark.parametrize("extended", [True, False])
@pytest.mark.parametrize("counters", [{}, {"stalls": 7, "dscan_mib": 3, "oom": 2, "majflt": 9}])
@pytest.mark.parametrize("now", [110.5, 130.0])
def test_a_steady_history_reads_as_the_full_computation_does(
    extended: bool, counters: dict[str, int], now: float
) -> None:
    """``steady=True`` (every sample equal) skips the rates; class and reason stay the same."""
    history = [
        sample(100.0 + 2 * i, last_update=109, extended=extended, **counters) for i in range(6)
    ]
    for since_t in (None, 104.0):
        full = classify(history, P, now=now, since_t=since_t)
        fast = classify(history, P, now=now, since_t=since_t, steady=True)
        assert (fast.klass, fast.reason, fast.basis) == (full.klass, full.reason, full.basis)
    assert classify(history, P, now=110.5).klass is PressureClass.NONE
    assert classify(history, P, now=130.0).klass is PressureClass.UNKNOWN  # stale: a timer
