"""The inflation step grows over calm takes in a row and falls back to one step at any pressure.

A warm database guest gives its cold cache back a base step (``inflate_step_ratio`` of its
maximum) per cooldown: in the lab's pairs the default policy in proactive mode took 51 MiB every
20 s and was still taking when the pair ended, at 57 % of what the fixed-size frontier says the
guest can give without harm. A guest that takes a step calmly (its calm time runs on through our
inflation: no stall, no direct reclaim, only the kswapd echo of the take) shows slack; the next
step is one base step larger, up to ``STEP_GROWTH_MAX``. Any pressure class, a deflate, or a
change by someone else brings it back to one.
"""

from __future__ import annotations

from dataclasses import replace

from autoballoon.core.decide import Action, EngineState, step
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.samples import HostSample
from autoballoon.core.state import STEP_GROWTH_MAX
from tests.factories import sample

MIB = 1024
PROACTIVE = PolicySet(GuestPolicy(mode="proactive"))
HOST = HostSample(0, mem_total_kib=24 << 20, mem_available_kib=20 << 20)
BASE_KIB = int(GuestPolicy().inflate_step_ratio * 4096 * MIB)


def takes(pressure_at: frozenset[int] = frozenset(), ticks: int = 200) -> list[tuple[int, int]]:
    """A 4 GiB guest using 512 MiB, the rest cache it can give: (tick, KiB taken) per take.
    At the ticks in ``pressure_at`` its allocations stall (an echo class, not kswapd)."""
    actual_kib, state, out, stalls = 4096 * MIB, EngineState(), [], 0
    for i in range(ticks):
        now = 1000.0 + 2 * i
        if i in pressure_at:
            stalls += 50
        s = sample(now, max_mib=4096, avail_mib=actual_kib // MIB - 512, stalls=stalls)
        s = replace(s, actual_kib=actual_kib)
        (d,), state = step(now, HOST, {"vm": s}, state, PROACTIVE)
        if d.action is Action.INFLATE:
            out.append((i, d.current_kib - d.target_kib))
        if d.action is not Action.HOLD:
            actual_kib = d.target_kib
    return out


def test_calm_takes_in_a_row_grow_the_step_to_its_cap() -> None:
    sizes = [kib for _, kib in takes()]
    assert sizes[:4] == [BASE_KIB, 2 * BASE_KIB, 3 * BASE_KIB, STEP_GROWTH_MAX * BASE_KIB]
    assert max(sizes) == STEP_GROWTH_MAX * BASE_KIB


def test_pressure_brings_the_step_back_to_one() -> None:
    calm = takes()
    third = calm[2][0]  # the tick of the third take, at three base steps
    hit = takes(pressure_at=frozenset({third + 3}))
    after = [kib for i, kib in hit if i > third + 3]
    assert after, "it takes again once calm"
    assert after[0] == BASE_KIB, hit
    assert after[1] == 2 * BASE_KIB, "and grows again from one"


def test_the_grown_step_reaches_more_in_the_same_time() -> None:
    # Over the first five minutes, as the lab pairs measure: at least twice what one base
    # step per cooldown took.
    early = [kib for _, kib in takes(ticks=150)]
    assert sum(early) >= 2 * len(early) * BASE_KIB - 2 * BASE_KIB
