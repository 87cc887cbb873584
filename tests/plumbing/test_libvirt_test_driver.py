"""Plumbing against libvirt's built-in test driver (test:///default, no daemon).

The test driver's statistics are made up (and their last-update is decades old), so these tests
prove the wiring only: listing, reading, mapping units, acting, dry-run, error mapping. Balloon
behaviour is proven on the lab (tests/lab/).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from autoballoon.backends.libvirt import LibvirtHypervisor, map_error
from autoballoon.config import DaemonConfig
from autoballoon.core.classify import PressureClass
from autoballoon.core.decide import Action
from autoballoon.core.policy import GuestPolicy, HostPolicy, PolicySet
from autoballoon.daemon import Controller
from autoballoon.hypervisor import DomainGone, GuestError, TransientError
from autoballoon.observe import GuestScope
from autoballoon.qmp import parse_balloon

URI = "test:///default"
ALL = GuestScope()


@pytest.fixture
def hv() -> Iterator[LibvirtHypervisor]:
    # test:///default is reset once its last connection in the process closes; closing ours keeps
    # one test's resize out of the next.
    adapter = LibvirtHypervisor(URI)
    yield adapter
    adapter.close()


def test_reads_running_domain_with_units_converted(hv: LibvirtHypervisor) -> None:
    reading = hv.read(ALL)
    (g,) = reading.guests
    assert g.name == "test" and g.source == "libvirt"  # the test driver has no QMP
    # Compared with libvirt's own KiB figures, not the pristine domain's: the test driver's
    # statistics follow the balloon, and test:///default keeps a resize for as long as any
    # connection in the process stays open (a full `make test` has seen a 1 GiB "test" here).
    conn = libvirt.open(URI)
    try:
        dom = conn.lookupByName("test")
        _state, max_kib, cur_kib, _vcpus, _cpu = dom.info()
        kib = dom.memoryStats()
    finally:
        conn.close()
    assert (g.actual_kib, g.max_kib) == (cur_kib, max_kib) and max_kib == 8388608
    assert kib["usable"] > 0 and g.stats["stat-available-memory"] == kib["usable"] * 1024
    assert g.rss_kib == kib["rss"] > 0  # KiB, as libvirt gives it


def test_include_exclude_scope(hv: LibvirtHypervisor) -> None:
    assert hv.read(GuestScope(include=("ab-lab-*",))).guests == []
    assert hv.read(GuestScope(exclude=("te*",))).guests == []
    assert [g.name for g in hv.read(GuestScope(include=("te*",))).guests] == ["test"]


def test_set_balloon_is_live(hv: LibvirtHypervisor) -> None:
    hv.read(ALL)
    hv.set_balloon_kib("test", 1048576)
    assert hv.read(ALL).guests[0].actual_kib == 1048576


def test_unknown_domain_is_gone_or_guest_error(hv: LibvirtHypervisor) -> None:
    hv.read(ALL)
    with pytest.raises((DomainGone, GuestError)):
        hv.set_balloon_kib("no-such-guest", 1048576)


def test_unreachable_daemon_is_transient() -> None:
    hv = LibvirtHypervisor("qemu+unix:///system?socket=/nonexistent/sock")
    with pytest.raises(TransientError):
        hv.read(ALL)
    hv.close()  # stops the background reconnection


def test_error_taxonomy() -> None:
    def err(code: int, domain: int) -> libvirt.libvirtError:
        e = libvirt.libvirtError("x")
        e.err = (code, domain, "msg", 2, None, None, None, 0, 0)
        return e

    assert isinstance(map_error(err(libvirt.VIR_ERR_NO_DOMAIN, 10)), DomainGone)
    assert isinstance(map_error(err(libvirt.VIR_ERR_SYSTEM_ERROR, 7)), TransientError)
    assert isinstance(
        map_error(err(libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_RPC)), TransientError
    )
    assert isinstance(map_error(err(libvirt.VIR_ERR_INVALID_ARG, 10)), GuestError)


def test_balloon_alias_from_live_xml() -> None:
    xml = """<domain><devices><memballoon model='virtio'><stats period='1'/>
             <alias name='balloon0'/></memballoon></devices></domain>"""
    balloon = parse_balloon(xml)
    assert balloon is not None
    assert (balloon.qom_path, balloon.stats_period_s) == ("/machine/peripheral/balloon0", 1)
    assert parse_balloon("<domain><devices><memballoon model='none'/></devices></domain>") is None


def controller(hv: LibvirtHypervisor, dry_run: bool, tmp_path: Path) -> Controller:
    config = DaemonConfig(uri=URI, policy_dir=tmp_path, status_file=tmp_path / "s.json")
    policies = PolicySet(GuestPolicy(mode="proactive"))
    clock = iter(float(t) for t in range(10**9, 10**9 + 1000, 5))
    return Controller(config, hv, policies, dry_run=dry_run, clock=lambda: next(clock))


@pytest.mark.parametrize("dry_run", [False, True])
def test_stale_guest_is_given_memory_back_live_but_not_in_dry_run(
    hv: LibvirtHypervisor, dry_run: bool, tmp_path: Path
) -> None:
    hv.read(ALL)
    hv.set_balloon_kib("test", 1048576)
    ctl = controller(hv, dry_run, tmp_path)
    report = ctl.tick()
    (g,) = report.guests
    d = g.decision
    assert g.klass is PressureClass.UNKNOWN  # the test driver's last-update is decades old
    assert d.action is Action.DEFLATE
    actual = hv.read(ALL).guests[0].actual_kib
    if dry_run:
        assert d.result == "dry-run" and actual == 1048576
    else:
        assert d.result == "applied" and actual == d.target_kib > 1048576


def test_tick_survives_unreachable_libvirt(tmp_path: Path) -> None:
    hv = LibvirtHypervisor("qemu+unix:///system?socket=/nonexistent/sock")
    ctl = controller(hv, False, tmp_path)
    report = ctl.tick()
    assert report.error and report.guests == () and ctl.failed_ticks == 1
    hv.close()


def test_reload_keeps_the_last_good_policies_on_error(
    hv: LibvirtHypervisor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policies = tmp_path / "pol"
    policies.mkdir(mode=0o755)
    default = policies / "default.toml"
    default.write_text("[policy]\nmode = 'proactive'\n")
    default.chmod(0o644)
    config_file = tmp_path / "autoballoon.toml"
    config_file.write_text(f"[daemon]\nuri = '{URI}'\npolicy_dir = '{policies}'\n")
    ctl = controller(hv, False, tmp_path)
    ctl.config_path = config_file
    assert ctl.reload() and ctl.policies.default.mode == "proactive"
    default.write_text("[policy]\nmode = 'greedy'\n")
    ctl.request_reload()  # what SIGHUP does: the reload happens at the next tick
    ctl.tick()
    assert ctl.policies.default.mode == "proactive", "kept the last good policies"
    assert "reload failed, keeping the last good" in caplog.text and "mode" in caplog.text
    default.write_text("[policy]\nmode = 'observe'\n")
    ctl.request_reload()
    report = ctl.tick()
    assert ctl.policies.default.mode == "observe"
    assert all(g.decision.action.value == "hold" for g in report.guests)


def test_a_wall_clock_step_back_neither_repeats_nor_drops_history(
    hv: LibvirtHypervisor, tmp_path: Path
) -> None:
    # The wall clock steps back 100 s after the third tick (NTP, an operator); the monotonic
    # clock goes on. The engine orders by the monotonic one: every reading is kept, once, in
    # order, and none is set aside as out of order. Reports keep the wall clock.
    walls = iter([1e9, 1e9 + 5, 1e9 + 10, 1e9 - 90, 1e9 - 85, 1e9 - 80])
    monos = iter([100.0, 105.0, 110.0, 115.0, 120.0, 125.0])
    config = DaemonConfig(uri=URI, policy_dir=tmp_path, status_file=tmp_path / "s.json")
    policies = PolicySet(GuestPolicy(mode="proactive"))
    ctl = Controller(config, hv, policies, clock=lambda: next(walls), monotonic=lambda: next(monos))
    reports = [ctl.tick() for _ in range(6)]
    assert [r.t for r in reports] == [1e9, 1e9 + 5, 1e9 + 10, 1e9 - 90, 1e9 - 85, 1e9 - 80]
    assert all(g.decision.rule != "out-of-order" for r in reports for g in r.guests)
    history = ctl.state.guests["test"].history
    assert [s.t for s in history] == [100.0, 105.0, 110.0, 115.0, 120.0, 125.0]
    # Each sample's statistics age was read on the wall clock at the same moment.
    last_update = history[0].last_update
    assert [s.stats_age_s for s in history] == [
        w - last_update for w in (1e9, 1e9 + 5, 1e9 + 10, 1e9 - 90, 1e9 - 85, 1e9 - 80)
    ]


def test_the_engines_host_verdict_reaches_the_report(hv: LibvirtHypervisor, tmp_path: Path) -> None:
    # A host reserve of 1 PiB: the host is short whatever it has available.
    config = DaemonConfig(uri=URI, policy_dir=tmp_path, status_file=tmp_path / "s.json")
    policies = PolicySet(GuestPolicy(mode="on-demand"), HostPolicy(reserve_mib=1 << 30))
    ctl = Controller(config, hv, policies)
    report = ctl.tick()
    assert report.host_verdict is not None
    assert report.host_verdict.text.startswith("host short by")
    assert report.host_verdict == ctl.state.host_verdict
