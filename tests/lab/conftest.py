"""Fixtures for tests that need the real lab (libvirtd + QEMU + Linux 6.12 guests).

`make setup` (or `bash contrib/lab/setup-host.sh`, as root) must have run. Nothing is
skipped: if libvirtd is unreachable the lab tests FAIL, because CI must run them.
The session tears down every ab-lab-* domain at the end (and stale ones at the start).
On a machine shared with someone else's lab guests (e.g. a running demo), set
AB_LAB_TEARDOWN=own to remove only the domains this session created.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from contrib.lab import Guest, GuestSpec, Lab, LabError, build_image, lab_lock  # noqa: E402

LabUp = Callable[[Sequence[GuestSpec]], list[Guest]]


@pytest.fixture(scope="session")
def lab_locked() -> Iterator[None]:
    """The lab has two host cores: lab tests, benchmarks and the demo never run at once.

    Timing-sensitive assertions (deflate within two ticks) would be noise otherwise.
    """
    with lab_lock("lab tests", verbose=False):
        yield


@pytest.fixture(scope="session")
def lab(lab_locked: None) -> Iterator[Lab]:
    try:
        the_lab = Lab()
    except LabError as exc:
        pytest.fail(f"the lab is not available: {exc}", pytrace=False)
    try:
        build_image()
    except LabError as exc:
        pytest.fail(f"cannot build the lab guest image: {exc}", pytrace=False)
    own_only = os.environ.get("AB_LAB_TEARDOWN", "all") == "own"
    if not own_only:
        the_lab.down()  # leftovers of a crashed previous run
    try:
        yield the_lab
    finally:
        if own_only:
            the_lab.down(list(the_lab.boot_seconds))
        else:
            the_lab.down()
        the_lab.close()


@pytest.fixture(scope="session")
def lab_up(lab: Lab) -> LabUp:
    """lab_up([GuestSpec(...), ...]) -> booted guests (stats + first ABREPORT seen)."""

    def up(specs: Sequence[GuestSpec]) -> list[Guest]:
        try:
            return lab.up(specs)
        except LabError as exc:
            pytest.fail(f"lab guests did not come up: {exc}", pytrace=False)

    return up


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 1.0,
    diag: Callable[[], str] = lambda: "",
) -> float:
    """Poll check() until true; returns the seconds it took, fails the test on timeout."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}. {diag()}")
        time.sleep(interval)
    return time.monotonic() - t0
