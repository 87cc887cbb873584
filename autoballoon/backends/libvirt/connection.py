"""The libvirt connection: opened at start, reopened in the background after a loss, closed.

A read never waits for libvirt to come back: only the first connection (at start, or after
``close()``) is opened in the caller's thread; after a loss it is reopened by a background thread
with backoff (tenacity, retrying the transient kind only), while ticks fail fast. Keepalives,
libvirt's close callback and the domains' lifecycle events are subscribed to on each connection,
and unsubscribed from before it is closed (or it never really closes).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from autoballoon.backends.libvirt.errors import map_error, refused_for_good
from autoballoon.hypervisor import CannotConnect, GuestError, HypervisorError, TransientError
from autoballoon.logs import Repeating

# The logger name the JSON log lines have always carried ("logger"), kept for log filters.
log = logging.getLogger("autoballoon.libvirt_adapter")

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


@dataclass
class Settings:
    """The backend's settings, shared by the connection, the reader and the facade (which
    exposes each as an attribute of its own: a change is seen at the next call)."""

    uri: str = "qemu:///system"
    extended_stats: str = "qmp"
    stats_period_s: int = 1
    dry_run: bool = False
    xml_refresh_s: float = 30.0
    read_budget_s: float = 2.0
    read_workers: int = 8


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


def _nothing(_name: str) -> bool:
    """The scope before the first read: lifecycle events are logged for no guest."""
    return False


def _ignore(*_args: Any) -> None:
    """No listener yet."""


class Connection:
    """One libvirt connection at a time, to ``settings.uri``.

    ``on_stopped(dom)`` is called (in libvirt's event thread) when a domain the current scope
    (``wanted``) accepts stops or is undefined; ``on_dropped()`` when the connection is
    forgotten, so that nothing keeps objects of a dead connection.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.wanted: Callable[[str], bool] = _nothing
        self.on_stopped: Callable[[Any], None] = _ignore
        self.on_dropped: Callable[[], None] = _ignore
        self.reconnects = 0
        self.errors = 0
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._stopping = threading.Event()
        self._reconnector: threading.Thread | None = None
        self._last_error: TransientError | None = None
        self._connect_inline = True  # at start and after close(); never after a loss
        self._closed = False  # set by libvirt's close callback (event thread)
        self._events_ok = True
        self._ever_connected = False
        self._lifecycle_id: int | None = None
        self._close_registered = False
        self._retries = Repeating(log)  # backoff tops at 8 s: one line a minute, not 10,800 a day
        try:
            _start_event_loop()
        except libvirt.libvirtError as err:  # events are a nicety; polling still works
            self._events_ok = False
            log.warning("libvirt event loop unavailable (%s); lifecycle events not followed", err)

    @property
    def uri(self) -> str:
        return self.settings.uri

    def connect(self) -> None:
        """Open the connection now (at start). ``CannotConnect`` for a URI that can never be
        opened as given (no such driver, malformed, authentication or permission refused);
        ``TransientError`` when libvirt does not answer (its socket is missing or refuses)."""
        try:
            self._open()
        except TransientError as err:
            cause = err.__cause__
            if isinstance(cause, libvirt.libvirtError) and refused_for_good(cause):
                raise CannotConnect(str(err)) from cause
            raise
        self._connect_inline = False

    def live(self) -> Any:
        """The live connection, or TransientError at once: a read never waits for libvirt.

        Only the first connection (at start, or after close()) is opened here, in the caller's
        thread; after a loss the connection is reopened in the background, with backoff, while
        ticks fail fast.
        """
        conn = self._conn
        if conn is not None and not self._closed and self.alive():
            return conn
        if conn is not None:
            self.drop()  # its callbacks too, or it never really closes
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
        """Reopen the connection with backoff until it works or the backend is closed.

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

    def drop(self) -> None:
        """Forget the connection; unregister callbacks first so that it can really close."""
        conn, self._conn = self._conn, None
        self.on_dropped()
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
        self._closed = True  # released and replaced by the next live(), in the tick's thread

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, _detail: int, _opaque: Any) -> None:
        name = dom.name()
        if not self.wanted(name):
            return
        what = _EVENT_NAMES.get(event, str(event))
        if event in (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED):
            self.on_stopped(dom)
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
        self.drop()
        self._connect_inline = True

    def map(self, err: libvirt.libvirtError) -> HypervisorError:
        """``map_error``, plus the connection's own word: an error on a dead connection is a lost
        connection whatever its code. Drops the connection or counts the guest error."""
        mapped = map_error(err)
        if not isinstance(mapped, TransientError) and not self.alive():
            mapped = TransientError(f"connection lost: {mapped}")
        if isinstance(mapped, TransientError):
            self.drop()
        elif isinstance(mapped, GuestError):
            self.errors += 1
        return mapped

    def alive(self) -> bool:
        conn = self._conn
        try:
            return conn is not None and bool(conn.isAlive())
        except libvirt.libvirtError:
            return False
