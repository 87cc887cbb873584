"""`on_stop = "deflate"` on libvirt's test driver: each guest's own policy decides.

The driver's one domain, "test", runs at 2 GiB of an 8 GiB maximum. A clean stop with
``on_stop = "deflate"`` gives a guest back what its policy allows it (its ``max_mib`` when set),
and leaves alone the guests the daemon must not resize: opted out, observe-only, or whose policy
cannot be resolved.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from autoballoon.backends.libvirt import LibvirtHypervisor
from autoballoon.config import DaemonConfig
from autoballoon.core.policy import GuestPolicy, Match, PolicyLayer, PolicySet
from autoballoon.core.units import KIB_PER_MIB
from autoballoon.daemon import Controller
from autoballoon.observe import GuestScope

URI = "test:///default"
START_KIB = 2048 * KIB_PER_MIB
DOMAIN_MAX_KIB = 8192 * KIB_PER_MIB


def reset_test_domain() -> None:
    """Back to 2 GiB: the driver keeps its state while any connection of this process lives."""
    conn = libvirt.open(URI)
    try:
        conn.lookupByName("test").setMemory(START_KIB)
    finally:
        conn.close()


@pytest.fixture
def hv() -> Iterator[LibvirtHypervisor]:
    reset_test_domain()
    hv = LibvirtHypervisor(URI)
    yield hv
    hv.close()
    reset_test_domain()


def stop_with(hv: LibvirtHypervisor, policies: PolicySet, tmp_path: Path) -> int:
    """A clean stop with on_stop = "deflate"; the guest's balloon size afterwards."""
    (g,) = hv.read(GuestScope()).guests
    assert (g.actual_kib, g.max_kib) == (START_KIB, DOMAIN_MAX_KIB)
    config = DaemonConfig(
        uri=URI, policy_dir=tmp_path, status_file=tmp_path / "s.json", on_stop="deflate"
    )
    Controller(config, hv, policies).finish()
    (g,) = hv.read(GuestScope()).guests
    return g.actual_kib


def both_files_match_test() -> tuple[PolicyLayer, ...]:
    return tuple(
        PolicyLayer(f"{n}.toml", Match(names=("test",)), {"mode": "proactive"}) for n in "ab"
    )


@pytest.mark.parametrize(
    ("policies", "why"),
    [
        (PolicySet(GuestPolicy(enabled=False)), "opted out"),
        (PolicySet(GuestPolicy(mode="observe")), "observe mode"),
        (PolicySet(layers=both_files_match_test()), "policy error"),
    ],
)
def test_guests_the_daemon_may_not_resize_are_left_alone(
    hv: LibvirtHypervisor,
    tmp_path: Path,
    policies: PolicySet,
    why: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="autoballoon")
    assert stop_with(hv, policies, tmp_path) == START_KIB
    assert any(
        "on_stop = deflate: guest test left as it is" in r.getMessage() and why in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


def test_the_policys_max_caps_the_deflation(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    assert stop_with(hv, PolicySet(GuestPolicy(max_mib=4096)), tmp_path) == 4096 * KIB_PER_MIB


def test_without_a_max_the_guest_gets_its_domain_maximum(
    hv: LibvirtHypervisor, tmp_path: Path
) -> None:
    assert stop_with(hv, PolicySet(GuestPolicy()), tmp_path) == DOMAIN_MAX_KIB
