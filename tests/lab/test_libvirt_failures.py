"""One guest whose QEMU monitor stops answering, on real guests: the others are not held up.

The stopped guest's QEMU process gets SIGSTOP (its monitor, and every libvirt call that needs it,
stops answering, as with a wedged or swapped-out QEMU) while the real controller ticks over three
guests. Its neighbours must still be read and decided on at every tick, no tick may run over the
interval, and after SIGCONT the stopped guest is read again.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoballoon.core.classify import PressureClass
from contrib.lab import Guest, GuestSpec, Lab
from contrib.lab.policies import preset_policies
from tests.lab.conftest import LabUp, wait_until
from tests.lab.daemon_helpers import INTERVAL_S, Run

pytestmark = pytest.mark.lab

A, B, C = "ab-lab-lf-a", "ab-lab-lf-b", "ab-lab-lf-c"
STOPPED_S = 5 * INTERVAL_S


@pytest.fixture(scope="module")
def guests(lab_up: LabUp, lab: Lab) -> Iterator[dict[str, Guest]]:
    booted = lab_up([GuestSpec(name, 256, "idle") for name in (A, B, C)])
    yield {g.name: g for g in booted}
    lab.down([A, B, C])


def qemu_pid(name: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())


def test_a_stopped_qemu_holds_up_neither_the_other_guests_nor_the_ticks(
    guests: dict[str, Guest],
) -> None:
    run = Run([A, B, C], preset_policies())
    run.hv.read_budget_s = INTERVAL_S / 2  # what the daemon gives it: min(2 s, interval / 2)
    pid = qemu_pid(A)
    with run:
        wait_until(lambda: len(run.reports) >= 3, 30, "three ticks before the stop")
        os.kill(pid, signal.SIGSTOP)
        stopped_t = time.time()
        try:
            time.sleep(STOPPED_S)
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed_t = time.time()
        wait_until(
            lambda: any(any(g.name == A for g in r.guests) for r in run.reports if r.t > resumed_t),
            30,
            "the stopped guest read again after SIGCONT",
        )
    assert not run.errors, run.errors
    during = [r for r in run.reports if stopped_t < r.t and r.t + r.duration_s < resumed_t]
    print(
        f"\n{len(during)} ticks while {A} was stopped; durations "
        f"{[round(r.duration_s, 2) for r in during]} s; A skipped as "
        f"{sorted({r.skipped.get(A, '-') for r in during})}"
    )
    assert len(during) >= STOPPED_S / INTERVAL_S - 2, "ticks kept coming"
    assert all(r.error is None for r in during), "a stopped guest is not a lost connection"
    assert all(r.duration_s < INTERVAL_S for r in during), "no tick ran over the interval"
    for r in during:
        assert all(g.name != A for g in r.guests) and r.skipped[A].startswith("busy"), r.skipped
        for other in (B, C):
            mine = [d for d in r.decisions if d.guest == other]
            assert len(mine) == 1, (other, r.skipped)  # still decided on, every tick
            assert mine[0].klass is not PressureClass.UNKNOWN, mine[0]  # from fresh statistics
    after = [r for r in run.reports if r.t > resumed_t and any(g.name == A for g in r.guests)]
    assert after and any(d.guest == A for d in after[0].decisions), "A controlled again"
