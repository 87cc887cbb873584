"""Direct reclaim right after our own inflation, on a guest with plenty still available, is the
guest handing the balloon the cold page cache it was asked for: the balloon driver's own page
allocations enter direct reclaim and count as alloc stalls. It is no rescue, and the next step
waits for it to end. Seen on `make demo`'s guests with a cold cache: 9.5 stalls/s right after
the second 51 MiB step with 381 MiB available, each answered by a deflate and a 180 s block.

The same stalls with the guest near its headroom, or with no inflation of ours before them,
are still rescued.
"""

from __future__ import annotations

from autoballoon.core.decide import Action, Decision, EngineState, step
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.samples import HostSample
from tests.factories import sample

POLICY = GuestPolicy(mode="proactive")
PROACTIVE = PolicySet(POLICY)
HOST_OK = HostSample(0, mem_total_kib=24 << 20, mem_available_kib=20 << 20)
MIB = 1024
TICK_S = 5.0


class ColdCacheGuest:
    """A 1 GiB guest whose memory is ``used_mib`` of its own plus cold cache, which answers each
    inflation with ``echo_s`` seconds of efficient direct reclaim (4 stalls/s, 4 MiB/s scanned,
    all of it reclaimed): the balloon's allocations reclaiming the cache."""

    def __init__(self, echo_s: float, used_mib: int = 124, always: bool = False,
                 dscan_per_s: float = 4.0) -> None:
        self.actual_mib = 1024
        self.used_mib = used_mib
        self.echo_s = echo_s
        self.always = always
        self.dscan_per_s = dscan_per_s
        self.stalls = 0
        self.dscan = self.drclm = 0.0
        self.last_inflate = -1e9
        self.now = 1000.0
        self.state = EngineState()
        self.sizes: list[int] = []
        """The balloon size each tick's decision was made at, MiB."""

    def tick(self) -> Decision:
        self.now += TICK_S
        if self.always or self.now - self.last_inflate <= self.echo_s:
            self.stalls += int(4 * TICK_S)
            self.dscan += self.dscan_per_s * TICK_S
            self.drclm += self.dscan_per_s * TICK_S
        s = sample(self.now, actual_mib=self.actual_mib,
                   avail_mib=self.actual_mib - self.used_mib, stalls=self.stalls,
                   dscan_mib=self.dscan, drclm_mib=self.drclm)
        (d,), self.state = step(self.now, HOST_OK, {"vm": s}, self.state, PROACTIVE)
        self.sizes.append(self.actual_mib)
        if d.action is not Action.HOLD:
            self.actual_mib = d.target_kib // MIB
            if d.action is Action.INFLATE:
                self.last_inflate = self.now
        return d


def run(guest: ColdCacheGuest, seconds: float) -> list[Decision]:
    return [guest.tick() for _ in range(int(seconds / TICK_S))]


def roomy(guest: ColdCacheGuest, size_mib: int) -> bool:
    """Still more than twice the default headroom available at this size."""
    return size_mib - guest.used_mib >= 2 * max(64, 0.15 * size_mib)


def test_direct_reclaim_echo_of_our_inflation_is_no_rescue() -> None:
    guest = ColdCacheGuest(echo_s=5)
    decisions = run(guest, 600)
    roomy_echoes = [d for d, mib in zip(decisions, guest.sizes, strict=True)
                    if str(d.klass) == "global-reclaim" and roomy(guest, mib)]
    assert not [d for d, mib in zip(decisions, guest.sizes, strict=True)
                if d.action is Action.DEFLATE and roomy(guest, mib)], (
        "a deflate with plenty available", [(d.rule, d.reason) for d in decisions])
    assert len(roomy_echoes) >= 3, "no global-reclaim echo with room: the case is not exercised"
    assert all(d.rule == "under-pressure" and "inflation" in d.reason for d in roomy_echoes)
    # the take goes on: most of the cold cache comes back
    assert min(guest.sizes) < 600, guest.sizes


def test_stalls_with_little_direct_scan_after_our_inflation_are_an_echo_too() -> None:
    # 4 stalls/s with 0.5 MiB/s scanned reads as cgroup-stall: "stalls while memory is
    # available", seen after inflations on make demo's idle guest with 177 MiB available
    guest = ColdCacheGuest(echo_s=5, dscan_per_s=0.5)
    decisions = run(guest, 600)
    echoes = [d for d, mib in zip(decisions, guest.sizes, strict=True)
              if str(d.klass) != "none" and d.action is Action.HOLD and roomy(guest, mib)
              and d.rule == "under-pressure"]
    assert echoes, "no echo: the case is not exercised"
    assert {str(d.klass) for d in echoes} <= {"cgroup-stall", "light-pressure"}, echoes
    assert all("inflation" in d.reason for d in echoes)
    quiet = ColdCacheGuest(echo_s=0)
    run(quiet, 600)
    # the calm time is not restarted: as much memory back as a guest that never stalls
    assert min(guest.sizes) == min(quiet.sizes) < 600


def test_the_echo_does_not_take_while_the_guest_still_reclaims() -> None:
    guest = ColdCacheGuest(echo_s=5)
    decisions = run(guest, 600)
    for before, d in zip(decisions, decisions[1:], strict=False):
        if str(before.klass) == "global-reclaim":
            assert d.action is not Action.INFLATE or str(d.klass) == "none", (before, d)


def test_the_same_stalls_near_the_headroom_are_rescued() -> None:
    # used memory so high that after a step the guest is under twice its headroom
    tight = ColdCacheGuest(echo_s=5, used_mib=724)  # 300 MiB available: one step fits
    decisions = run(tight, 300)
    assert any(d.action is Action.DEFLATE and d.rule == "rescue" for d in decisions), [
        (d.action, d.rule, str(d.klass)) for d in decisions]


def test_stalls_without_an_inflation_of_ours_are_rescued() -> None:
    guest = ColdCacheGuest(echo_s=0, always=True)
    guest.actual_mib = 800  # ballooned by someone earlier
    decisions = run(guest, 60)
    assert any(d.action is Action.DEFLATE and d.rule == "rescue" for d in decisions)
