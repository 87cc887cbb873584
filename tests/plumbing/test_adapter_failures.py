"""How the libvirt adapter maps real failures: one guest's trouble is not a lost connection.

These tests wrap a real test:///default connection (no daemon) and make chosen domains raise a
libvirtError with a chosen code from every per-domain call, which is the adapter's edge with
libvirt. They test the error mapping and the isolation of guests, not ballooning (the lab does).
"""

from __future__ import annotations

import contextlib
import gc
import signal
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import libvirt
import pytest

from autoballoon.backends.libvirt import LibvirtHypervisor, map_error
from autoballoon.commands.wiring import build_hypervisor, build_sinks
from autoballoon.config import DaemonConfig
from autoballoon.daemon import run_daemon
from autoballoon.hypervisor import DomainGone, GuestError, PermanentError, TransientError
from autoballoon.observe import GuestScope, Observer
from autoballoon.qmp import parse_balloon

URI = "test:///default"
ALL = GuestScope()
SECOND = """<domain type='test'><name>test2</name><memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>1048576</currentMemory><os><type>hvm</type></os>
  <devices><memballoon model='virtio'/></devices></domain>"""
# Identity calls answer from the client side; everything else would reach the domain's monitor.
IDENTITY = {"name", "UUIDString", "UUID", "ID", "connect"}


def libvirt_error(code: int, domain: int, message: str) -> libvirt.libvirtError:
    err = libvirt.libvirtError(message)
    err.err = (code, domain, message, 2, None, None, None, 0, 0)
    return err


MONITOR_GONE = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_QEMU, "Unable to read from monitor")
RPC_LOST = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot recv data: EOF")


class Hang:
    """A guest whose QEMU monitor does not answer: its per-domain calls block until released."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.calls = 0

    def __call__(self, call: Callable[..., Any], *args: object) -> Any:
        self.calls += 1
        self.released.wait()
        return call(*args)


Fault = tuple[int, int, str] | Hang
"""(libvirt error code, libvirt error domain, message) of an error to raise, or a Hang."""


class FaultyDomain:
    """A real domain whose per-domain calls raise ``fault`` (identity calls still work)."""

    def __init__(self, dom: Any, fault: Fault) -> None:
        self.real, self.fault = dom, fault

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self.real, attr)
        if attr in IDENTITY or not callable(value):
            return value

        def fail(*args: object) -> Any:
            if isinstance(self.fault, Hang):
                return self.fault(value, *args)
            raise libvirt_error(*self.fault)  # a fresh error: no traceback kept between tests

        return fail


class FaultyConnection:
    """A real test:///default connection; domains named in ``faults`` fail as told."""

    def __init__(self, conn: Any, faults: dict[str, Fault]) -> None:
        self.real, self.faults = conn, faults

    def _wrap(self, dom: Any) -> Any:
        fault = self.faults.get(dom.name())
        return FaultyDomain(dom, fault) if fault is not None else dom

    def getAllDomainStats(self, *args: Any) -> list[tuple[Any, dict[str, Any]]]:  # noqa: N802
        return [(self._wrap(d), f) for d, f in self.real.getAllDomainStats(*args)]

    def domainListGetStats(self, doms: list[Any], *args: Any) -> Any:  # noqa: N802
        for d in doms:
            if isinstance(d, FaultyDomain) and not isinstance(d.fault, Hang):
                raise libvirt_error(*d.fault)
        real = [d.real if isinstance(d, FaultyDomain) else d for d in doms]
        for d in doms:
            if isinstance(d, FaultyDomain) and isinstance(d.fault, Hang):
                return d.fault(self.real.domainListGetStats, real, *args)
        return self.real.domainListGetStats(real, *args)

    def lookupByName(self, name: str) -> Any:  # noqa: N802
        return self._wrap(self.real.lookupByName(name))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.real, attr)


def fresh_test_guest(open_: Callable[[str], Any]) -> None:
    """Restart test:///default's "test" guest: back to its config, without a stats period.

    test:///default is shared by all of a process's open connections, and other tests leave
    theirs open with the guest changed.
    """
    conn = open_(URI)
    try:
        dom = conn.lookupByName("test")
        dom.destroy()
        dom.create()
    finally:
        conn.close()


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Fault]]:
    """Opens of test:///default get a second running guest, test2, and the faults given."""
    table: dict[str, Fault] = {}
    real_open = libvirt.open

    fresh_test_guest(real_open)

    def open_(uri: str | None = None) -> Any:
        conn = real_open(uri)
        if "test2" not in conn.listDefinedDomains() + [d.name() for d in conn.listAllDomains()]:
            conn.createXML(SECOND, 0)  # test:///default is shared by the process's connections
        return FaultyConnection(conn, table)

    monkeypatch.setattr(libvirt, "open", open_)
    yield table
    gc.collect()  # domain objects left in tracebacks hold the shared test driver open
    conn = real_open(URI)
    with contextlib.suppress(libvirt.libvirtError):  # already gone if that was the last user
        conn.lookupByName("test2").destroy()  # transient: gone for the next test
    conn.close()
    # A connection still held (a hung call's worker finishes after the test) keeps the shared
    # driver, and this test's resizes of "test" with it: the next file started with it at 1 GiB.
    fresh_test_guest(real_open)


@pytest.fixture
def hv(faults: dict[str, Fault]) -> Iterator[LibvirtHypervisor]:
    adapter = LibvirtHypervisor(URI, extended_stats="off")
    yield adapter
    adapter.close()  # test:///default is reset once its last connection closes


def test_both_guests_read_without_faults(hv: LibvirtHypervisor) -> None:
    reading = hv.read(ALL)
    assert sorted(g.name for g in reading.guests) == ["test", "test2"] and not reading.skipped


def test_one_guests_monitor_error_is_not_a_lost_connection(
    hv: LibvirtHypervisor, faults: dict[str, Fault]
) -> None:
    faults["test2"] = MONITOR_GONE
    reading = hv.read(ALL)  # before: TransientError, every guest dropped
    assert [g.name for g in reading.guests] == ["test"]
    assert "Unable to read from monitor" in reading.skipped["test2"]
    assert hv.reconnects == 0 and hv.errors == 1


def test_one_guests_monitor_error_when_acting_is_that_guests_error(
    hv: LibvirtHypervisor, faults: dict[str, Fault]
) -> None:
    faults["test2"] = MONITOR_GONE
    hv.read(ALL)
    with pytest.raises(GuestError):
        hv.set_balloon_kib("test2", 524288)
    hv.set_balloon_kib("test", 1048576)  # the connection was kept: the other guest is resized
    assert {g.name: g.actual_kib for g in hv.read(ALL).guests}["test"] == 1048576


def test_rpc_error_on_one_guest_is_a_lost_connection(
    hv: LibvirtHypervisor, faults: dict[str, Fault]
) -> None:
    faults["test2"] = RPC_LOST
    with pytest.raises(TransientError):
        hv.read(ALL)


@pytest.mark.parametrize(
    ("code", "domain", "kind"),
    [
        (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_QEMU, GuestError),
        (libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_FROM_QEMU, GuestError),
        (libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_FROM_QEMU, GuestError),
        (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU, GuestError),
        (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_FROM_QEMU, DomainGone),
        (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_QEMU, DomainGone),
        (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_FROM_QEMU, PermanentError),
        (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_FROM_QEMU, PermanentError),
        (libvirt.VIR_ERR_OPERATION_DENIED, libvirt.VIR_FROM_QEMU, PermanentError),
        (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, TransientError),
        (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_REMOTE, TransientError),
        (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_FROM_NONE, TransientError),
        (libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_FROM_NONE, TransientError),
        (libvirt.VIR_ERR_RPC, libvirt.VIR_FROM_NONE, TransientError),
    ],
)
def test_error_taxonomy(code: int, domain: int, kind: type[Exception]) -> None:
    assert type(map_error(libvirt_error(code, domain, "msg"))) is kind


def period_of(xml: str) -> int | None:
    """The statistics period of a domain XML's balloon (which it has)."""
    balloon = parse_balloon(xml)
    assert balloon is not None
    return balloon.stats_period_s


def stats_period_in_xml(name: str) -> int | None:
    """The live XML's <memballoon><stats period=...>, read on a connection of its own."""
    conn = libvirt.open(URI)
    try:
        return period_of(conn.lookupByName(name).XMLDesc(0))
    finally:
        conn.close()


def test_dry_run_sets_no_stats_period_and_reports_no_statistics(
    faults: dict[str, Fault], caplog: pytest.LogCaptureFixture
) -> None:
    hv = LibvirtHypervisor(URI, extended_stats="off", dry_run=True)
    try:
        assert stats_period_in_xml("test") is None  # the test driver's guests start without one
        readings = [hv.read(ALL), hv.read(ALL)]
        assert stats_period_in_xml("test") is None, "dry-run changed the guest"
        for reading in readings:
            g = {g.name: g for g in reading.guests}["test"]
            assert g.last_update == 0 and g.stats == {}  # classified unknown: "no statistics"
        said = [r for r in caplog.records if r.getMessage().startswith("guest test has no")]
        assert len(said) == 1, said  # said once, not every tick
        with pytest.raises(PermanentError):
            hv.set_balloon_kib("test", 1048576)
    finally:
        hv.close()


def test_live_run_sets_the_stats_period_once(faults: dict[str, Fault]) -> None:
    hv = LibvirtHypervisor(URI, extended_stats="off", stats_period_s=3)
    try:
        hv.read(ALL)
        assert stats_period_in_xml("test") == 3
    finally:
        hv.close()


def test_run_dry_run_leaves_the_guests_stats_period_alone(tmp_path: Path) -> None:
    """`autoballoon run --dry-run --once` on the test driver: the guest is not changed."""
    watcher = libvirt.open(URI)  # keeps test:///default's state alive across the daemon's close
    fresh_test_guest(libvirt.open)
    signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        config = DaemonConfig(
            uri=URI,
            interval_s=0.5,
            policy_dir=tmp_path,
            strict_modes=False,
            status_file=tmp_path / "status.json",
        )
        hypervisor = build_hypervisor(config, dry_run=True)
        sinks = partial(build_sinks, config, record=None)
        assert run_daemon(config, hypervisor, sinks, dry_run=True, once=True) == 0
        assert period_of(watcher.lookupByName("test").XMLDesc(0)) is None
    finally:
        for s, handler in signals.items():
            signal.signal(s, handler)
        watcher.close()


def test_guest_restarted_while_events_were_missed_gets_its_stats_period_again(
    faults: dict[str, Fault], monkeypatch: pytest.MonkeyPatch
) -> None:
    hv = LibvirtHypervisor(URI, extended_stats="off", stats_period_s=3)
    monkeypatch.setattr(hv.connection, "_on_lifecycle", lambda *_args: None)  # every event missed
    watcher = libvirt.open(URI)
    try:
        hv.read(ALL)
        assert stats_period_in_xml("test") == 3
        dom = watcher.lookupByName("test")
        dom.destroy()  # a restart: the new instance starts from the config, without a period
        dom.create()
        assert stats_period_in_xml("test") is None
        hv.read(ALL)
        assert stats_period_in_xml("test") == 3, "the new instance was taken for the old one"
    finally:
        hv.close()
        watcher.close()


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """A guard against hanging, not a timing assertion."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:g} s"
        time.sleep(0.05)


class RecordingConnection:
    """A real connection that records the calls that release it."""

    def __init__(self, conn: Any, log: list[str]) -> None:
        self.real, self.log = conn, log

    def domainEventDeregisterAny(self, callback_id: int) -> Any:  # noqa: N802
        self.log.append("deregister lifecycle")
        return self.real.domainEventDeregisterAny(callback_id)

    def unregisterCloseCallback(self) -> Any:  # noqa: N802
        self.log.append("unregister close")
        return self.real.unregisterCloseCallback()

    def close(self) -> Any:
        self.log.append("close")
        return self.real.close()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.real, attr)


def test_reconnect_after_a_close_event_releases_the_old_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released: list[list[str]] = []
    real_open = libvirt.open

    def open_(uri: str | None = None) -> Any:
        released.append([])
        return RecordingConnection(real_open(uri), released[-1])

    monkeypatch.setattr(libvirt, "open", open_)
    hv = LibvirtHypervisor(URI, extended_stats="off")
    try:
        hv.read(ALL)
        connection = hv.connection
        old = connection._conn
        # as libvirt's thread does
        connection._on_close(old, libvirt.VIR_CONNECT_CLOSE_REASON_EOF, None)
        with pytest.raises(TransientError):  # fails fast; reconnects in the background
            hv.read(ALL)
        wait_for(lambda: hv.reconnects == 1, "the background reconnection")
        assert [g.name for g in hv.read(ALL).guests] == ["test"]
        assert len(released) == 2
        assert released[0] == ["deregister lifecycle", "unregister close", "close"]
    finally:
        hv.close()


def test_samples_carry_the_guests_real_stats_period_and_rss(
    faults: dict[str, Fault], tmp_path: Path
) -> None:
    proc = tmp_path / "proc"
    (proc / "pressure").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n")
    hv = LibvirtHypervisor(URI, extended_stats="off", stats_period_s=3)
    watcher = libvirt.open(URI)
    try:
        observer = Observer(hv, proc)
        sample = observer.observe(1.0).samples["test"]
        assert sample.stats_period_s == 3  # the one the adapter set
        assert sample.rss_kib == 1048576  # the test driver's made-up balloon.rss
        # Someone else (Nova, an operator) sets 10 s, as `virsh dommemstat --period 10` does.
        watcher.lookupByName("test").setMemoryStatsPeriod(10, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        hv.xml_refresh_s = 0.0  # re-read the live XML at once rather than within 30 s
        assert observer.observe(2.0).samples["test"].stats_period_s == 10
    finally:
        hv.close()
        watcher.close()


def guarded(call: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    """call() in a thread; fails the test (instead of hanging it) if it has not returned."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(_outcome(call)), daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"{what} did not return within {timeout_s:g} s"
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


BUDGET_SLACK_S = 4.0
"""Added to a budget before a budgeted call counts as late: a loaded machine schedules the
waiting thread late, but a call that waited for the hung guest (20 s and more) is far past it."""


def budgeted(call: Callable[[], Any], what: str, budget_s: float) -> Any:
    """``guarded(call)``, and the call returned (or raised) within its budget plus slack."""
    start = time.monotonic()
    try:
        return guarded(call, what)
    finally:
        elapsed = time.monotonic() - start
        assert elapsed <= budget_s + BUDGET_SLACK_S, (
            f"{what} took {elapsed:.1f} s, its budget is {budget_s:g} s"
        )


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except BaseException as err:  # handed to the test's thread
        return err


@pytest.fixture
def hung_test2(faults: dict[str, Fault]) -> Iterator[tuple[LibvirtHypervisor, Hang]]:
    """An adapter, and test2's calls hanging until released (released at the end in any case).

    The budget is generous for a machine under load: the healthy guest's read takes
    milliseconds, and only the hung one is meant to run out of it.
    """
    hang = Hang()
    faults["test2"] = hang
    hv = LibvirtHypervisor(URI, extended_stats="off", read_budget_s=2.0)
    yield hv, hang
    hang.released.set()
    hv.close()


def test_a_hung_monitor_costs_the_read_budget_not_the_other_guests(
    hung_test2: tuple[LibvirtHypervisor, Hang],
) -> None:
    hv, hang = hung_test2
    for _tick in range(3):
        reading = budgeted(lambda: hv.read(ALL), "a read while test2 hangs", hv.read_budget_s)
        assert [g.name for g in reading.guests] == ["test"]
        assert reading.skipped["test2"].startswith("busy: its QEMU monitor"), reading.skipped
    assert hang.calls == 1, "a guest whose call has not returned is not asked again"
    hang.released.set()  # SIGCONT: the monitor answers again
    wait_for(lambda: "test2" in [g.name for g in hv.read(ALL).guests], "test2 read again")


def test_ticks_fail_fast_while_libvirt_hangs_and_reconnect_between_ticks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_open = libvirt.open
    hv = LibvirtHypervisor(URI, extended_stats="off")
    hung = Hang()
    try:
        hv.read(ALL)
        monkeypatch.setattr(libvirt, "open", lambda uri=None: hung(real_open, uri))
        connection = hv.connection  # libvirtd went away:
        connection._on_close(connection._conn, libvirt.VIR_CONNECT_CLOSE_REASON_EOF, None)
        for _tick in range(3):  # libvirtd accepts but does not answer: open() hangs
            with pytest.raises(TransientError, match="reconnecting in the background"):
                guarded(lambda: hv.read(ALL), "a read while libvirt hangs")
        assert hung.calls == 1, "one reconnection attempt in the background, none in a tick"
        hung.released.set()  # libvirtd answers again
        wait_for(lambda: hv.reconnects == 1, "the background reconnection")
        assert [g.name for g in hv.read(ALL).guests] == ["test"]
    finally:
        hung.released.set()
        hv.close()


def test_resizing_a_guest_that_stopped_answering_costs_the_budget_not_the_tick(
    hung_test2: tuple[LibvirtHypervisor, Hang],
) -> None:
    hv, hang = hung_test2
    resize = partial(hv.set_balloon_kib, "test2", 524288)
    with pytest.raises(GuestError, match="no answer within"):  # stopped since it was read
        budgeted(resize, "a resize of a hung guest", hv.read_budget_s)
    hv.read(ALL)  # its read is now pending as well
    with pytest.raises(GuestError, match="busy"):
        budgeted(resize, "a resize of a busy guest", hv.read_budget_s)
    assert hang.calls == 2, "no call for a guest with one still pending"
    hv.set_balloon_kib("test", 1048576)  # the others are resized
