"""The lab itself, on a real hypervisor: guests boot, report, and respond to the balloon.

One module-scoped set of four guests is shared by all tests (boot is cheap, waiting
for behaviour is not). Tests run in file order; the OOM test comes last because it
leaves its guest's memload restarting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from contrib.lab import NEW_STATS, U64_ABSENT, Guest, GuestSpec, Lab

from .conftest import LabUp, wait_until

pytestmark = pytest.mark.lab

IDLE = GuestSpec("t-idle", 256, "idle")
STEADY = GuestSpec("t-steady", 384, "steady:100")
CACHE = GuestSpec("t-cache", 512, "cache:160")
PRESS = GuestSpec("t-press", 512, "cache:32+thrash:120")


@pytest.fixture(scope="module")
def guests(lab: Lab, lab_up: LabUp) -> Iterator[dict[str, Guest]]:
    booted = lab_up([IDLE, STEADY, CACHE, PRESS])
    yield {g.spec.name: g for g in booted}
    lab.down([g.name for g in booted])


def new_stats(g: Guest) -> dict[str, int]:
    stats = g.guest_stats()["stats"]
    return {k: int(stats[k]) for k in NEW_STATS}


def report(g: Guest) -> dict[str, float]:
    r = g.latest_report()
    assert r is not None, f"{g.name}: no ABREPORT line on the console"
    return r


def diag(g: Guest) -> Callable[[], str]:
    def f() -> str:
        return (f"{g.name}: qemu {new_stats(g)} guest {g.latest_report()} "
                f"balloon {g.balloon_actual_mib():.0f} MiB")
    return f


def test_three_workloads_report_new_stats(lab: Lab, guests: dict[str, Guest]) -> None:
    for spec in (IDLE, STEADY, CACHE):
        g = guests[spec.name]
        assert g.is_running()
        assert 0 < lab.boot_seconds[g.name] < 90, lab.boot_seconds
        gs = g.guest_stats()
        assert gs["last-update"] > 0
        for key in NEW_STATS:
            assert key in gs["stats"], f"{g.name}: {key} missing from guest-stats {gs}"
            value = gs["stats"][key]
            assert isinstance(value, int) and value != U64_ABSENT, f"{g.name}: {key}={value}"
            assert 0 <= value < 2**63
        assert gs["stats"]["stat-total-memory"] > 0
        assert abs(g.balloon_actual_mib() - spec.mem_mib) < 1
        r = report(g)
        assert 0.7 * spec.mem_mib * 1024 < r["MemTotal"] <= spec.mem_mib * 1024
        assert r["oom_kill"] == 0
    # The workloads are what they claim to be (the guest's own view).
    steady, cache = guests[STEADY.name], guests[CACHE.name]
    wait_until(lambda: report(steady)["ws_mib"] == 100, 30, "steady working set 100 MiB",
               diag=diag(steady))
    wait_until(lambda: report(cache)["Buffers"] >= 140 * 1024, 30, "cache guest page cache",
               diag=diag(cache))
    assert report(guests[IDLE.name])["ws_mib"] == 0
    print("\nboot (define+start until stats and first ABREPORT):",
          {k: round(v, 1) for k, v in lab.boot_seconds.items()})


def test_balloon_target_changes_guest_memtotal(guests: dict[str, Guest]) -> None:
    g = guests[IDLE.name]
    total0 = report(g)["MemTotal"]
    target = 176
    g.set_balloon_mib(target)
    try:
        wait_until(lambda: abs(g.balloon_actual_mib() - target) < 1, 10, "balloon actual",
                   interval=0.2)
        shrink_kib = (IDLE.mem_mib - target) * 1024
        took = wait_until(lambda: report(g)["MemTotal"] <= total0 - 0.9 * shrink_kib, 15,
                          "guest MemTotal to drop", interval=0.2, diag=diag(g))
        print(f"\nMemTotal {total0} -> {report(g)['MemTotal']} kB, seen on console in {took:.1f}s")
    finally:
        g.set_balloon_mib(IDLE.mem_mib)
    wait_until(lambda: report(g)["MemTotal"] >= total0 - 1024, 15, "MemTotal to come back",
               interval=0.2, diag=diag(g))


def test_pressure_raises_stalls_scans_and_reclaims(guests: dict[str, Guest]) -> None:
    """Balloon below working set + cache: direct reclaim, allocation stalls, kswapd."""
    g = guests[PRESS.name]
    wait_until(lambda: report(g)["ws_mib"] == 120, 30, "thrash working set", diag=diag(g))
    before, rep0 = new_stats(g), report(g)
    g.set_balloon_mib(200)
    keys = ("stat-alloc-stalls", "stat-direct-scans", "stat-direct-reclaims",
            "stat-async-scans", "stat-async-reclaims")
    try:
        wait_until(lambda: all(new_stats(g)[k] > before[k] for k in keys), 90,
                   "stalls, scans and reclaims to rise", diag=diag(g))
        after = new_stats(g)
    finally:
        g.set_balloon_mib(PRESS.mem_mib)
    print(f"\npressure: {before} -> {after}")
    # The guest's own /proc/vmstat agrees that it stalled and reclaimed (the console
    # report can lag QEMU's stats by a second).
    wait_until(lambda: all(report(g)[k] > rep0[k]
                           for k in ("allocstall", "pgscan_direct", "pgsteal_direct")),
               10, "console allocstall/pgscan_direct/pgsteal_direct", diag=diag(g))


def test_cache_guest_async_scans_and_reclaims(guests: dict[str, Guest]) -> None:
    g = guests[CACHE.name]
    wait_until(lambda: report(g)["Buffers"] >= 140 * 1024, 30, "page cache", diag=diag(g))
    before, rep0 = new_stats(g), report(g)
    g.set_balloon_mib(180)
    try:
        wait_until(lambda: (new_stats(g)["stat-async-scans"] > before["stat-async-scans"]
                            and new_stats(g)["stat-async-reclaims"]
                            > before["stat-async-reclaims"]),
                   60, "async scans and reclaims to rise", diag=diag(g))
        after = new_stats(g)
        # The guest saw kswapd scan and its loop-device cache ("Buffers") shrink.
        wait_until(lambda: (report(g)["pgscan_kswapd"] > rep0["pgscan_kswapd"]
                            and report(g)["Buffers"] < rep0["Buffers"]),
                   10, "console pgscan_kswapd up and Buffers down", diag=diag(g))
    finally:
        g.set_balloon_mib(CACHE.mem_mib)
    print(f"\ncache: {before} -> {after}")
    assert after["stat-oom-kills"] == 0


def test_stats_period_set_live_like_virsh_dommemstat(guests: dict[str, Guest]) -> None:
    g = guests[IDLE.name]
    assert g.stats_period_s() == 1  # how the lab boots its guests
    g.set_stats_period_s(10)  # OpenStack Nova's period
    try:
        assert g.stats_period_s() == 10
        alias = g.balloon_alias()
        path = f"/machine/peripheral/{alias}"
        assert g.qmp("qom-get", path=path, property="guest-stats-polling-interval") == 10
        updates: list[int] = []

        def two_new_reports() -> bool:
            t = int(g.guest_stats()["last-update"])
            if not updates or t != updates[-1]:
                updates.append(t)
            return len(updates) >= 3

        wait_until(two_new_reports, 40, "two reports at the 10 s period", interval=0.5)
        assert updates[2] - updates[1] >= 9, updates  # reports now come every 10 s, not 1 s
    finally:
        g.set_stats_period_s(1)
    assert g.stats_period_s() == 1


def test_balloon_far_below_working_set_causes_oom_kills(guests: dict[str, Guest]) -> None:
    g = guests[STEADY.name]
    wait_until(lambda: report(g)["ws_mib"] == 100, 30, "steady working set", diag=diag(g))
    before, rep0 = new_stats(g), report(g)
    assert before["stat-oom-kills"] == 0
    g.set_balloon_mib(140)
    try:
        wait_until(lambda: new_stats(g)["stat-oom-kills"] > before["stat-oom-kills"], 60,
                   "stat-oom-kills to rise", diag=diag(g))
        wait_until(lambda: report(g)["oom_kill"] > rep0["oom_kill"], 15,
                   "console oom_kill to rise", diag=diag(g))
    finally:
        g.set_balloon_mib(STEADY.mem_mib)
    # The workload was killed and restarted by /init.
    wait_until(lambda: report(g)["memload_restarts"] >= 1, 10, "memload restart", diag=diag(g))
    assert new_stats(g)["stat-alloc-stalls"] > before["stat-alloc-stalls"]
    assert g.is_running()  # init survived: only memload was killed
    # After deflating, the workload recovers its working set.
    wait_until(lambda: report(g)["ws_mib"] == 100, 30, "working set to recover", diag=diag(g))
