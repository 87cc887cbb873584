"""The one module that imports libvirt: reading guests and setting balloons.

Sits at the outer edge of observe and act. It maps every libvirt error once into the taxonomy of
``autoballoon.hypervisor`` and retries only the transient kind (tenacity, with backoff), here and
nowhere else: a lost connection is reopened in the background, between ticks, while ticks fail
fast. Nothing in a read waits long on one guest: domain states are listed without touching any
QEMU monitor, each guest's balloon is read in a worker within a time budget, and libvirt is asked
not to wait for a guest's job (``VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT``).

Units are converted here, once: libvirt speaks KiB, QEMU bytes; everything leaving this module
uses QEMU's names and bytes for statistics and KiB for sizes.

The 6.12 counters (stat-oom-kills ... stat-direct-reclaims) are not exposed by any libvirt API;
the only route is QEMU's ``qom-get <balloon>/guest-stats`` through ``qemuMonitorCommand``. That
marks the domain "tainted: custom-monitor" in libvirt's logs (once per domain). It is on by
default (``extended_stats = "qmp"``) and can be switched off (``"off"``), in which case only the
standard balloon statistics are used. A guest whose QEMU refuses the QMP read (not supported)
falls back to the standard statistics; one whose monitor fails is not controlled that tick.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass
from typing import Any

import libvirt
import libvirt_qemu
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from autoballoon.core.samples import NO_TAGS, DomainTags
from autoballoon.hypervisor import (
    CannotConnect,
    DomainGone,
    GuestError,
    HypervisorError,
    PermanentError,
    RawGuest,
    Reading,
    TransientError,
)
from autoballoon.logs import Repeating
from autoballoon.qmp import (
    balloon_info_from_xml,
    guest_stats_command,
    parse_guest_stats_reply,
    stats_from_libvirt_fields,
    tags_from_xml,
)

log = logging.getLogger(__name__)

# Connection-level: the connection is unusable for every guest. VIR_ERR_SYSTEM_ERROR is not in
# the list: from the QEMU driver it is one guest's monitor ("Unable to read from monitor"); the
# same code from the RPC layer ("Cannot recv data") is caught by its error domain.
_CONNECTION_CODES = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC}
_CONNECTION_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}
_GONE_CODES = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID}
_PERMANENT_CODES = {
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_INVALID_ARG,
    libvirt.VIR_ERR_OPERATION_DENIED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
}

_STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}

_EVENT_NAMES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pm-suspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}


def map_error(err: libvirt.libvirtError) -> HypervisorError:
    """The single place where libvirt errors become the project's taxonomy."""
    code, domain = err.get_error_code(), err.get_error_domain()
    msg = err.get_error_message() or str(err)
    if code in _CONNECTION_CODES or domain in _CONNECTION_DOMAINS:
        return TransientError(msg)
    if code in _GONE_CODES:
        return DomainGone(msg)
    if code in _PERMANENT_CODES:
        return PermanentError(msg)
    return GuestError(msg)


_AUTH_CODES = {
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_CANCELLED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    libvirt.VIR_ERR_OPERATION_DENIED,
}


def _refused_for_good(err: libvirt.libvirtError) -> bool:
    """An open() failure that retrying cannot fix: authentication or permission refused, or
    anything not from the RPC layer (no such driver, a malformed URI, a test driver file that
    does not parse). From the RPC layer, a socket that is missing or refuses is libvirt not
    running (yet): worth trying again."""
    code, domain = err.get_error_code(), err.get_error_domain()
    if code in _AUTH_CODES or "Permission denied" in (err.get_error_message() or ""):
        return True
    return domain not in _CONNECTION_DOMAINS


_event_loop_lock = threading.Lock()
_event_loop_started = False


def _start_event_loop() -> None:
    """libvirt's default event loop, in a daemon thread: needed for events and keepalives.

    Also silences libvirt's own printing of every error to stderr: errors are mapped and logged
    here, once, with context.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()

        def loop() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


@dataclass
class _DomainInfo:
    """What is learnt once per running instance of a domain (``_instance``) from its live XML."""

    balloon_path: str | None
    """QOM path of the balloon device; "" when it has no alias; None when there is none."""
    stats_period_s: int | None
    """The guest's statistics period, None while it has none."""
    period_tried: bool = False
    """Setting a period was tried (live) or said to be skipped (dry-run): never twice."""
    tainted_logged: bool = False
    xml_read_at: float = 0.0
    """time.monotonic() of the last read of the live XML."""
    autodeflate: bool = False
    """The balloon has deflate-on-OOM (``<memballoon autodeflate='on'>``)."""
    free_page_reporting: bool = False
    """The balloon reports freed pages (``<memballoon freePageReporting='on'>``)."""
    tags: DomainTags = NO_TAGS
    """The domain's ``<metadata>`` about its policy (``qmp.tags_from_xml``)."""


def balloon_options_from_xml(xml: str) -> tuple[bool, bool]:
    """(deflate-on-OOM, free page reporting) of a domain's balloon, from its XML.

    libvirt writes them as attributes of ``<memballoon>`` (``autodeflate='on'``,
    ``freePageReporting='on'``); absent, "off" or unparsable XML all read as off.
    """
    try:
        balloon = ET.fromstring(xml).find("./devices/memballoon")
    except ET.ParseError:
        return False, False
    if balloon is None:
        return False, False
    return balloon.get("autodeflate") == "on", balloon.get("freePageReporting") == "on"


def _instance(dom: Any) -> tuple[str, int]:
    """What tells one running instance of a domain from the next: a restart changes the ID.

    Both are known client-side (no call to the daemon). Keyed so, the cache stays right when
    lifecycle events were missed (a reconnect, a daemon restart).
    """
    return dom.UUIDString(), int(dom.ID())


def _not_running(fields: dict[str, Any]) -> str | None:
    """Why a listed domain is not controlled now (paused, migrating...), or None if running."""
    state = fields.get("state.state", libvirt.VIR_DOMAIN_RUNNING)
    if state == libvirt.VIR_DOMAIN_RUNNING:
        return None
    if state == libvirt.VIR_DOMAIN_PAUSED and fields.get("state.reason") == (
        libvirt.VIR_DOMAIN_PAUSED_MIGRATION
    ):
        return "migrating"
    return _STATE_NAMES.get(state, f"state {state}")


def _fields_from_memory_stats(dom: Any) -> dict[str, Any]:
    """Per-domain fallback for drivers whose bulk stats lack balloon.* (e.g. the test driver)."""
    stats = dom.memoryStats()
    fields: dict[str, Any] = {
        f"balloon.{key}": value for key, value in stats.items() if key != "last_update"
    }
    if "actual" in stats:
        fields["balloon.current"] = stats["actual"]
        fields["balloon.maximum"] = dom.maxMemory()
    if "last_update" in stats:
        fields["balloon.last-update"] = stats["last_update"]
    return fields


def _job_running(dom: Any) -> bool:
    try:
        job = dom.jobInfo()[0]
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return False  # drivers without jobs (the test driver) cannot be migrating
        raise
    return job not in (libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED)


def _resize(dom: Any, kib: int) -> None:
    # A running domain being migrated (or under another job) keeps state "running": ask for
    # its job only now, when about to act, not for every guest every tick.
    if _job_running(dom):
        raise GuestError("a job (migration, save, dump) is running; not resized now")
    dom.setMemoryFlags(kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def _describe(tags: DomainTags) -> str:
    if not tags:
        return "none"
    parts = [f"policy {tags.policy}"] if tags.policy else []
    parts += [f"Nova flavor {tags.flavor}"] if tags.flavor else []
    parts += [f"{k}={v}" for k, v in tags.overrides]
    return ", ".join(parts)


def _nothing(_name: str) -> bool:
    """The scope before the first read: lifecycle events are logged for no guest."""
    return False


class LibvirtHypervisor:
    """``autoballoon.hypervisor.Hypervisor`` over a libvirt connection."""

    def __init__(
        self,
        uri: str = "qemu:///system",
        *,
        extended_stats: str = "qmp",
        stats_period_s: int = 1,
        dry_run: bool = False,
        xml_refresh_s: float = 30.0,
        read_budget_s: float = 2.0,
        read_workers: int = 8,
    ) -> None:
        """``dry_run``: call no setter at all (no balloon target, no statistics period).

        ``xml_refresh_s``: how often a running guest's live XML is read again, to follow a stats
        period someone else changes (``virsh dommemstat --period``); no event tells.

        ``read_budget_s``: how long one read waits for the guests' balloons (``read_workers`` of
        them read at once). A guest not read by then is left out of this tick (busy) and is read
        again once its pending call returns; a setter that gets no answer in that time is
        reported as failed. A read never waits for libvirt to come back: reconnection runs in
        the background, with backoff, between ticks.
        """
        self.uri = uri
        self.dry_run = dry_run
        self.xml_refresh_s = xml_refresh_s
        self.extended_stats = extended_stats
        self.stats_period_s = stats_period_s
        self.read_budget_s = read_budget_s
        self.read_workers = read_workers
        self._busy: dict[tuple[str, int], Future[RawGuest | str]] = {}
        self._conn_lock = threading.Lock()
        self._stopping = threading.Event()
        self._reconnector: threading.Thread | None = None
        self._last_error: TransientError | None = None
        self._connect_inline = True  # at start and after close(); never after a loss
        self.reconnects = 0
        self.errors = 0
        self._conn: Any = None
        self._domains: dict[str, Any] = {}
        self._info: dict[tuple[str, int], _DomainInfo] = {}
        self._closed = False  # set by libvirt's close callback (event thread)
        self._events_ok = True
        self._ever_connected = False
        self._lifecycle_id: int | None = None
        self._close_registered = False
        self._wanted: Callable[[str], bool] = _nothing
        self._retries = Repeating(log)  # backoff tops at 8 s: one line a minute, not 10,800 a day
        try:
            _start_event_loop()
        except libvirt.libvirtError as err:  # events are a nicety; polling still works
            self._events_ok = False
            log.warning("libvirt event loop unavailable (%s); lifecycle events not followed", err)

    # --- connection ------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the connection now (at start). ``CannotConnect`` for a URI that can never be
        opened as given (no such driver, malformed, authentication or permission refused);
        ``TransientError`` when libvirt does not answer (its socket is missing or refuses)."""
        try:
            self._open()
        except TransientError as err:
            cause = err.__cause__
            if isinstance(cause, libvirt.libvirtError) and _refused_for_good(cause):
                raise CannotConnect(str(err)) from cause
            raise
        self._connect_inline = False

    def _connect(self) -> Any:
        """The live connection, or TransientError at once: a read never waits for libvirt.

        Only the first connection (at start, or after close()) is opened here, in the caller's
        thread; after a loss the connection is reopened in the background, with backoff, while
        ticks fail fast.
        """
        conn = self._conn
        if conn is not None and not self._closed and self._alive():
            return conn
        if conn is not None:
            self._drop_connection()  # its callbacks too, or it never really closes
        if self._connect_inline:
            self._connect_inline = False
            try:
                return self._open()
            except TransientError as err:
                self._last_error = err
                self._start_reconnecting()
                raise
        self._start_reconnecting()
        raise TransientError(
            f"cannot connect to {self.uri} ({self._last_error or 'connection lost'}); "
            "reconnecting in the background"
        )

    def _open(self) -> Any:
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as err:
            raise TransientError(f"cannot connect to {self.uri}: {err}") from err
        if conn is None:
            raise TransientError(f"cannot connect to {self.uri}")
        if self._events_ok:
            self._subscribe(conn)
        with self._conn_lock:
            if self._ever_connected:
                self.reconnects += 1
                if not self._retries.ended("reconnect", f"reconnected to {self.uri}"):
                    log.info("reconnected to %s", self.uri)
            self._ever_connected = True
            self._conn, self._closed = conn, False
        return conn

    def _start_reconnecting(self) -> None:
        with self._conn_lock:
            if self._reconnector is not None and self._reconnector.is_alive():
                return
            self._reconnector = threading.Thread(
                target=self._reconnect, name="libvirt-reconnect", daemon=True
            )
            self._reconnector.start()

    def _reconnect(self) -> None:
        """Reopen the connection with backoff until it works or the adapter is closed.

        tenacity retries the transient kind only; its sleep is the stop event's wait, so that
        close() ends the loop at once.
        """
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            wait=wait_exponential(multiplier=0.5, max=8),
            stop=lambda _state: self._stopping.is_set(),
            sleep=lambda seconds: None if self._stopping.wait(seconds) else None,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            retrying(self._open)
        except TransientError as err:
            self._last_error = err

    def _subscribe(self, conn: Any) -> None:
        """Keepalive, close and lifecycle callbacks; each optional (the test driver lacks some)."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("keepalive", lambda: conn.setKeepAlive(5, 3)),
            ("close events", lambda: conn.registerCloseCallback(self._on_close, None)),
            (
                "lifecycle events",
                lambda: conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
                ),
            ),
        ]
        for what, call in steps:
            try:
                result = call()
                if what == "lifecycle events":
                    self._lifecycle_id = int(result)  # type: ignore[call-overload]
                elif what == "close events":
                    self._close_registered = True
            except libvirt.libvirtError as err:
                log.debug("%s unavailable on %s: %s", what, self.uri, err)

    def _drop_connection(self) -> None:
        """Forget the connection; unregister callbacks first so that it can really close."""
        conn, self._conn = self._conn, None
        self._domains.clear()
        if conn is None:
            return
        if self._lifecycle_id is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(self._lifecycle_id)
        if self._close_registered:
            with contextlib.suppress(libvirt.libvirtError):
                conn.unregisterCloseCallback()
        self._lifecycle_id, self._close_registered = None, False
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    def _on_close(self, _conn: Any, reason: int, _opaque: Any) -> None:
        log.warning("libvirt connection closed (reason %d); will reconnect", reason)
        self._closed = True  # released and replaced by the next _connect, in the tick's thread

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, _detail: int, _opaque: Any) -> None:
        name = dom.name()
        if not self._wanted(name):
            return
        what = _EVENT_NAMES.get(event, str(event))
        if event in (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED):
            self._info.pop(_instance(dom), None)
        log.info("guest %s %s", name, what)

    def _log_retry(self, state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        if isinstance(err, TransientError):
            self._last_error = err
        wait = state.next_action.sleep if state.next_action else 0
        self._retries.happened(
            "reconnect",
            logging.WARNING,
            f"libvirt unreachable ({err}); next reconnection attempt in {wait:.1f} s",
        )

    def close(self) -> None:
        """Drop the connection and stop reconnecting; a later read connects afresh."""
        self._stopping.set()
        reconnector, self._reconnector = self._reconnector, None
        if reconnector is not None:
            reconnector.join(timeout=5)
        self._stopping.clear()
        self._drop_connection()
        self._connect_inline = True

    # --- reading -----------------------------------------------------------------------------
    def balloons(self) -> list[RawGuest]:
        """Every running guest's balloon size and maximum, and nothing else: no statistics, no
        QMP, no statistics period set (for `release` and `check-policy --uri`, which must not
        touch a guest they only look at). ``stats`` is empty."""
        conn = self._connect()
        try:
            doms = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except libvirt.libvirtError as err:
            raise self._map(err) from err
        guests = []
        for dom in doms:
            try:
                _state, max_kib, actual_kib, *_ = dom.info()
                tags = tags_from_xml(dom.XMLDesc(0))
                guests.append(
                    RawGuest(
                        dom.name(),
                        dom.UUIDString(),
                        actual_kib,
                        max_kib,
                        0,
                        {},
                        "libvirt",
                        tags=tags,
                    )
                )
            except libvirt.libvirtError as err:
                if not isinstance(self._map(err), DomainGone):
                    raise self._map(err) from err
        return guests

    def read(self, wanted: Callable[[str], bool]) -> Reading:
        """Every running guest ``wanted`` accepts, read within ``read_budget_s``.

        The listing asks for domain states only, which never waits on a guest's QEMU monitor;
        each guest's balloon is then read in a worker, so one guest whose monitor does not
        answer costs this tick the budget, not the other guests' readings.
        """
        self._wanted = wanted
        conn = self._connect()
        try:
            records = conn.getAllDomainStats(
                libvirt.VIR_DOMAIN_STATS_STATE, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
            )
        except libvirt.libvirtError as err:
            raise self._map(err) from err
        reading = Reading()
        self._domains = {}
        started: dict[str, tuple[tuple[str, int], Future[RawGuest | str]]] = {}
        pool = ThreadPoolExecutor(self.read_workers, thread_name_prefix="libvirt-read")
        try:
            for dom, fields in records:
                name = dom.name()
                if not wanted(name):
                    continue
                self._domains[name] = dom
                key = _instance(dom)
                why = _not_running(fields) or self._still_busy(key)
                if why is not None:
                    reading.skipped[name] = why
                    continue
                started[name] = (key, pool.submit(self._read_guest, conn, dom, name))
        finally:
            pool.shutdown(wait=False)
        wait_for_futures([f for _key, f in started.values()], timeout=self.read_budget_s)
        for name, (key, future) in started.items():
            if future.cancel():  # never started: the budget ran out while it was queued
                reading.skipped[name] = "not read: the tick's read budget ran out first"
                continue
            if not future.done():
                self._busy[key] = future
                reading.skipped[name] = (
                    f"busy: its QEMU monitor did not answer within {self.read_budget_s:g} s; "
                    "read again once it does"
                )
                continue
            try:
                outcome = future.result()
            except libvirt.libvirtError as err:
                mapped = self._map(err)
                if isinstance(mapped, TransientError):
                    raise mapped from err
                if not isinstance(mapped, DomainGone):
                    reading.skipped[name] = f"error: {mapped}"
                continue
            if isinstance(outcome, str):
                reading.skipped[name] = outcome
            else:
                reading.guests.append(outcome)
        running = {_instance(dom) for dom, _fields in records}
        for gone in set(self._info) - running:  # stopped while its event was missed
            del self._info[gone]
        for gone in set(self._busy) - running:
            del self._busy[gone]
        return reading

    def _still_busy(self, key: tuple[str, int]) -> str | None:
        """Why a guest whose previous read has not returned yet is not asked again."""
        future = self._busy.get(key)
        if future is None:
            return None
        if not future.done():
            return "busy: its QEMU monitor has not answered an earlier read yet"
        del self._busy[key]  # answered late: its result is old, read it afresh
        return None

    def _read_guest(self, conn: Any, dom: Any, name: str) -> RawGuest | str:
        """One running guest's balloon (in a worker): the guest, or why it is not controlled."""
        uuid = dom.UUIDString()
        info = self._domain_info(dom)
        if info.balloon_path is None:
            return "no virtio balloon device"
        # NOWAIT: if another call holds this guest's libvirt job (another client's query, a
        # migration, a hung monitor), libvirt answers at once with the sizes only. Then wait for
        # the job after all: this is a worker, the tick waits no longer than its budget.
        balloon = libvirt.VIR_DOMAIN_STATS_BALLOON
        nowait = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
        ((_dom, fields),) = conn.domainListGetStats([dom], balloon, nowait)
        if "balloon.current" in fields and "balloon.rss" not in fields:
            ((_dom, fields),) = conn.domainListGetStats([dom], balloon, 0)
        if "balloon.current" not in fields:
            fields = fields | _fields_from_memory_stats(dom)
        if "balloon.current" not in fields or "balloon.maximum" not in fields:
            return "balloon reports no size"
        actual = int(fields["balloon.current"])
        maximum = int(fields["balloon.maximum"])
        rss = fields.get("balloon.rss")
        rss_kib = int(rss) if rss is not None else None
        if info.stats_period_s is None and not self._give_stats_period(dom, name, info):
            # No period, none set: whatever QEMU holds is no statistics. Reported as such, so
            # the guest is classified unknown and never squeezed on numbers it did not send.
            return RawGuest(
                name,
                uuid,
                actual,
                maximum,
                0,
                {},
                "libvirt",
                rss_kib,
                autodeflate=info.autodeflate,
                free_page_reporting=info.free_page_reporting,
                tags=info.tags,
            )
        if rss is None:  # libvirt read no statistics even with the job
            return "libvirt reads no balloon statistics for it"
        qmp = None
        if self.extended_stats == "qmp" and info.balloon_path:  # "" (no alias): no QMP
            qmp = self._qmp_guest_stats(dom, name, info.balloon_path, info)
        source = "libvirt" if qmp is None else "qmp"
        last_update, stats = qmp or (
            int(fields.get("balloon.last-update", 0)),
            stats_from_libvirt_fields(fields),
        )
        return RawGuest(
            name,
            uuid,
            actual,
            maximum,
            last_update,
            stats,
            source,
            rss_kib,
            info.stats_period_s,
            info.autodeflate,
            info.free_page_reporting,
            info.tags,
        )

    def _domain_info(self, dom: Any) -> _DomainInfo:
        """The cached facts of this running instance, from its live XML (re-read now and then:
        the stats period can be changed by someone else, and no event says so). A restart is a
        new instance, read afresh: that is when a redefined balloon device takes effect."""
        key = _instance(dom)
        info = self._info.get(key)
        now = time.monotonic()
        if info is not None and now - info.xml_read_at < self.xml_refresh_s:
            return info
        xml = dom.XMLDesc(0)
        path, period = balloon_info_from_xml(xml)
        autodeflate, reporting = balloon_options_from_xml(xml)
        if info is None:
            info = self._info[key] = _DomainInfo(path, period or None)
            if autodeflate or reporting:
                log.info(
                    "guest %s: balloon with deflate-on-OOM %s, free page reporting %s",
                    dom.name(),
                    "on" if autodeflate else "off",
                    "on" if reporting else "off",
                )
        elif period and period != info.stats_period_s:
            log.info("guest %s: statistics period is now %d s", dom.name(), period)
            info.stats_period_s = period
        info.autodeflate, info.free_page_reporting = autodeflate, reporting
        tags = tags_from_xml(xml)
        if tags != info.tags:
            log.info("guest %s: policy metadata %s", dom.name(), _describe(tags))
            info.tags = tags
        info.xml_read_at = now
        return info

    def _give_stats_period(self, dom: Any, name: str, info: _DomainInfo) -> bool:
        """Set the configured statistics period on a guest that has none (never in dry-run).

        True when the guest now has one. Tried once per running instance, said once.
        """
        if info.period_tried:
            return False
        info.period_tried = True
        if self.dry_run:
            log.warning(
                "guest %s has no balloon statistics period and a dry run sets none: it reads as "
                "unknown until one is set: virsh dommemstat --period 10 --live %s (a live "
                "daemon sets stats_period_s itself)",
                name,
                name,
            )
            return False
        try:
            dom.setMemoryStatsPeriod(self.stats_period_s, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as err:
            log.warning("guest %s: cannot set the statistics period: %s", name, err)
            return False
        log.info("guest %s: statistics period set to %d s", name, self.stats_period_s)
        info.stats_period_s = self.stats_period_s
        return True

    def _qmp_guest_stats(
        self, dom: Any, name: str, balloon_path: str, info: _DomainInfo
    ) -> tuple[int, dict[str, object]] | None:
        try:
            reply = libvirt_qemu.qemuMonitorCommand(dom, guest_stats_command(balloon_path), 0)
        except libvirt.libvirtError as err:
            mapped = map_error(err)
            if not isinstance(mapped, PermanentError):
                raise  # this guest's monitor, its end or the connection: not for a fallback
            log.debug("guest %s: QMP guest-stats failed (%s); standard stats", name, mapped)
            return None
        parsed = parse_guest_stats_reply(reply)
        if parsed is None:
            return None
        if not info.tainted_logged:
            log.info(
                "guest %s: reading the 6.12 counters via QMP (libvirt logs it as "
                "'tainted: custom-monitor'; set extended_stats = \"off\" to avoid; "
                "`autoballoon check-policy --uri` says why and what it costs)",
                name,
            )
            info.tainted_logged = True
        return parsed

    # --- acting ------------------------------------------------------------------------------
    def set_balloon_kib(self, name: str, kib: int) -> None:
        if self.dry_run:
            raise PermanentError(f"dry-run: guest {name}'s balloon is not changed")
        dom = self._domains.get(name)
        try:
            if dom is None:
                dom = self._connect().lookupByName(name)
            if self._still_busy(_instance(dom)) is not None:
                raise GuestError("busy: its QEMU monitor has not answered an earlier read yet")
            # In a worker, like the reads: a guest that stopped answering since it was read
            # costs this tick the budget, not the resizing of the guests after it.
            pool = ThreadPoolExecutor(1, thread_name_prefix="libvirt-set")
            done = pool.submit(_resize, dom, int(kib))
            pool.shutdown(wait=False)
            try:
                done.result(timeout=self.read_budget_s)
            except FutureTimeout:
                raise GuestError(
                    f"no answer within {self.read_budget_s:g} s (its QEMU monitor is busy?); "
                    "the new size may still be applied"
                ) from None
        except libvirt.libvirtError as err:
            raise self._map(err) from err

    def _map(self, err: libvirt.libvirtError) -> HypervisorError:
        """``map_error``, plus the connection's own word: an error on a dead connection is a lost
        connection whatever its code. Drops the connection or counts the guest error."""
        mapped = map_error(err)
        if not isinstance(mapped, TransientError) and not self._alive():
            mapped = TransientError(f"connection lost: {mapped}")
        if isinstance(mapped, TransientError):
            self._drop_connection()
        elif isinstance(mapped, GuestError):
            self.errors += 1
        return mapped

    def _alive(self) -> bool:
        conn = self._conn
        try:
            return conn is not None and bool(conn.isAlive())
        except libvirt.libvirtError:
            return False
