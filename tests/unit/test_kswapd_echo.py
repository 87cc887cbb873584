"""kswapd reclaiming page cache right after our own inflation is the guest freeing what was
taken (the echo of the change): it neither holds the guest nor restarts its calm time. The
same class with no inflation of ours before it still holds."""

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


class WarmGuest:
    """A 1 GiB guest with 900 MiB of cache (available) that answers every inflation with
    ``echo_s`` seconds of efficient kswapd reclaim (10 MiB/s scanned, 8 reclaimed)."""

    def __init__(self, echo_s: float, always_kswapd: bool = False) -> None:
        self.actual_mib = 1024
        self.echo_s = echo_s
        self.always = always_kswapd
        self.ascan = self.arclm = 0.0
        self.last_inflate = -1e9
        self.now = 1000.0
        self.state = EngineState()

    def tick(self) -> Decision:
        self.now += TICK_S
        if self.always or self.now - self.last_inflate <= self.echo_s:
            self.ascan += 10 * TICK_S
            self.arclm += 8 * TICK_S
        s = sample(self.now, actual_mib=self.actual_mib, avail_mib=self.actual_mib - 124,
                   ascan_mib=self.ascan, arclm_mib=self.arclm)
        (d,), self.state = step(self.now, HOST_OK, {"vm": s}, self.state, PROACTIVE)
        if d.action is Action.INFLATE:
            self.actual_mib = d.target_kib // MIB
            self.last_inflate = self.now
        return d


def run(guest: WarmGuest, seconds: float) -> list[Decision]:
    return [guest.tick() for _ in range(int(seconds / TICK_S))]


def test_the_echo_of_our_inflation_does_not_slow_the_next_step() -> None:
    echo = WarmGuest(echo_s=15)
    decisions = run(echo, 300)
    kswapd = [d for d in decisions if str(d.klass) == "kswapd-reclaim"]
    assert kswapd, "the guest never showed kswapd-reclaim: the case is not exercised"
    assert all(d.rule != "under-pressure" for d in kswapd)
    inflations = [d for d in decisions if d.action is Action.INFLATE]
    quiet = WarmGuest(echo_s=0)
    quiet_inflations = [d for d in run(quiet, 300) if d.action is Action.INFLATE]
    # as many steps as a guest that shows no reclaim at all, so as much memory back
    assert len(inflations) == len(quiet_inflations) >= 5
    assert echo.actual_mib == quiet.actual_mib < 800


def test_kswapd_reclaim_with_no_inflation_of_ours_still_holds() -> None:
    churn = WarmGuest(echo_s=0, always_kswapd=True)
    decisions = run(churn, 300)
    assert all(d.action is Action.HOLD for d in decisions)
    assert any(d.rule == "under-pressure" for d in decisions[5:])
    assert churn.actual_mib == 1024
