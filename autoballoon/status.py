"""Status file: the running daemon's state, written for `autoballoon status`.

Sits after act, beside the other sinks, below the loop. ``StatusSink`` rewrites one JSON file
atomically at every tick from the report values (``autoballoon.report``); the `status` command
(``autoballoon.commands.status_command``) reads it back. Both sides share one typed document,
``StatusDocument``: the writer serializes it, the reader validates the file into it, so the two
cannot drift apart on a key. The file is mode 0600 in a directory created 0700: guest names,
sizes and reasons are the host administrator's business. Nothing here reads libvirt or changes
a guest: the file is a report.

Units in the file follow the rest of the daemon: sizes in KiB (``*_kib``), times in epoch
seconds (``*_at``, ``t``) and durations in seconds (``*_s``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

from autoballoon import __version__
from autoballoon.config import DaemonConfig, metrics_url
from autoballoon.core.samples import HostSample
from autoballoon.core.state import HostVerdict
from autoballoon.report import Change, GuestRecord, Health, ReportValue, TickReport, reclaimed_kib

log = logging.getLogger("autoballoon")

FORMAT: Final = 1
"""Version of the file's layout; bumped when a field changes meaning (adding one does not)."""


LastAction = Change
"""A guest's latest change, whichever tick made it (a hold only when it reports what the guest
did: ``DecisionRecord.notable``, from_kib = to_kib = the size it deflated itself to)."""


class GuestStatus(GuestRecord):
    """A status row: the guest's record at the last good tick, and its latest change."""

    last_action: LastAction | None = None


class HostStatus(ReportValue):
    mem_total_kib: int
    mem_available_kib: int
    psi_some_avg10: float | None = None
    psi_full_avg10: float | None = None
    verdict: str | None = None
    """On-demand: None while the host is above its reserve and its guests fit in it, else
    what is done about it, in words (``verdict_kind`` says which)."""
    verdict_kind: str | None = None
    """The kind of ``verdict`` (``autoballoon.core.state.Verdict``): asking, waiting, untouched,
    taken-again, nothing-spare, fitting or overcommitted; None with no verdict."""


class BackendCounts(ReportValue):
    """The hypervisor's trouble counters (the file's ``libvirt`` table); None: not counted."""

    errors: int | None = None
    reconnects: int | None = None


class LastTick(ReportValue):
    t: float
    duration_s: float
    error: str | None = None


class StatusDocument(ReportValue):
    """The whole status file."""

    format: Literal[1] = FORMAT
    state: Literal["running", "stopped"]
    pid: int
    hostname: str = ""
    version: str = ""
    mode: Literal["live", "dry-run"]
    uri: str
    interval_s: float
    stale_after_s: float
    """Older than this, the daemon counts as stuck (see ``status_stale_after_s``)."""
    started_at: float
    updated_at: float
    stopped_at: float | None = None
    ticks: int
    failed_ticks: int
    overruns: int
    libvirt: BackendCounts = BackendCounts()
    last_tick: LastTick
    failing_since: float | None = None
    """When the ticks started failing (libvirt or /proc unreadable), None while they work: the
    `status` command reports such a daemon as failing, not running."""
    last_good_tick_at: float | None = None
    metrics_url: str | None = None
    host: HostStatus | None = None
    reclaimed_kib: int = 0
    """Sum over the guests of balloon maximum minus current size."""
    guests: tuple[GuestStatus, ...] = ()
    skipped: dict[str, str] = {}
    """Guests seen but not controlled, and why."""

    def text(self) -> str:
        """The file's text: one line, keys in the document's own order (stable from one write
        to the next). Serialized by pydantic's compiled serializer, the same JSON as
        ``to_json``: at 1,000 guests the file is over 500 KiB, rewritten every tick, and
        ``json.dumps(indent=...)`` would run Python's pure-Python encoder over all of it (most of
        a tick's time; `python -m json.tool` or `jq` indent it for a reader)."""
        return self.model_dump_json(by_alias=True) + "\n"


SLOW_TICK_S = 20.0
"""More than any tick takes: a read waits for libvirt at most its budget (2 s), each resize too."""


def status_stale_after_s(interval_s: float) -> float:
    """How old the last write may be before the daemon counts as stuck.

    Three missed intervals, plus a tick slowed down by busy guest monitors (``SLOW_TICK_S``):
    beyond that, the loop is no longer slow but stuck. An unreachable libvirt does not hold a
    tick (it fails at once, and is written too).
    """
    return 3 * interval_s + SLOW_TICK_S


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: readers see the old file or the new one, never a part.

    The temporary file is created 0600 in the same directory (so the rename is atomic), synced,
    then renamed over the target; the directory is created 0700 when missing.
    """
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    else:
        os.chmod(directory, 0o700)  # mkdir's mode goes through the umask
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class StatusSink:
    """Publishes each tick to the status file; on close, marks the file ``stopped``.

    Never raises into the loop: a file that cannot be written is reported once (and once more
    when it works again). Refuses to overwrite the file of another live daemon (a dry run
    started with the defaults next to the real one), and leaves it alone on close.
    """

    def __init__(
        self,
        path: Path,
        *,
        uri: str = "",
        interval_s: float = 5.0,
        stale_after_s: float = 35.0,
        metrics_url: str | None = None,
        pid: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.uri = uri
        self.interval_s = interval_s
        self.stale_after_s = stale_after_s
        self.metrics_url = metrics_url
        self.pid = os.getpid() if pid is None else pid
        self.clock = clock
        self.started_at = clock()
        self.doc: StatusDocument | None = None
        self._guests: tuple[GuestStatus, ...] = ()
        self._host: HostStatus | None = None
        self._skipped: dict[str, str] = {}
        self._last: dict[str, LastAction] = {}
        self._owned = False
        self._failing: str | None = None
        self._failing_since: float | None = None
        self._last_good: float | None = None

    @classmethod
    def for_config(cls, config: DaemonConfig) -> StatusSink:
        """The sink the daemon runs with ``config`` publishes to."""
        metrics = None
        if config.metrics_port:
            metrics = metrics_url(config.metrics_address, config.metrics_port)
        return cls(
            config.status_file,
            uri=config.uri,
            interval_s=config.interval_s,
            stale_after_s=status_stale_after_s(config.interval_s),
            metrics_url=metrics,
        )

    def retime(self, interval_s: float) -> None:
        """A reload changed the interval: the staleness threshold follows it."""
        self.interval_s = interval_s
        self.stale_after_s = status_stale_after_s(interval_s)

    # --- the daemon side ---------------------------------------------------------------------
    def on_tick(self, report: TickReport, health: Health) -> None:
        self.doc = self._document(report, health)
        self._publish(self.doc)

    def close(self) -> None:
        if self.doc is None or not self._owned:
            return
        now = self.clock()
        self.doc = self.doc.model_copy(
            update={"state": "stopped", "stopped_at": now, "updated_at": now}
        )
        self._publish(self.doc)

    def _publish(self, doc: StatusDocument) -> None:
        try:
            if not self._owned:
                other = _other_owner(self.path, self.pid)
                if other is not None:
                    self._fail(
                        f"another autoballoon (pid {other}) publishes its status there; give "
                        "this one its own --status-file"
                    )
                    return
            write_atomic(self.path, doc.text())
        except OSError as err:
            self._fail(str(err))
            return
        self._owned = True
        if self._failing is not None:
            log.info("status file %s written again", self.path)
            self._failing = None

    def _fail(self, why: str) -> None:
        if self._failing != why:
            log.warning("status file %s not written: %s", self.path, why)
            self._failing = why

    def _document(self, report: TickReport, health: Health) -> StatusDocument:
        if report.error is None:
            self._host = _host(report.host, report.host_verdict)
            self._guests = self._guest_rows(report)
            self._skipped = dict(report.skipped)
            self._failing_since, self._last_good = None, report.t
        elif self._failing_since is None:
            # A failed tick read nothing; keep showing what the last good one saw.
            self._failing_since = report.t
        return StatusDocument(
            state="running",
            pid=self.pid,
            hostname=socket.gethostname(),
            version=__version__,
            mode="dry-run" if report.dry_run else "live",
            uri=self.uri,
            interval_s=self.interval_s,
            stale_after_s=self.stale_after_s,
            started_at=self.started_at,
            updated_at=self.clock(),
            stopped_at=None,
            ticks=health.ticks,
            failed_ticks=health.failed_ticks,
            overruns=health.overruns,
            libvirt=BackendCounts(
                errors=health.hypervisor_errors, reconnects=health.hypervisor_reconnects
            ),
            last_tick=LastTick(t=report.t, duration_s=report.duration_s, error=report.error),
            failing_since=self._failing_since,
            last_good_tick_at=self._last_good,
            metrics_url=self.metrics_url,
            host=self._host,
            reclaimed_kib=reclaimed_kib(self._guests),
            guests=self._guests,
            skipped=self._skipped,
        )

    def _guest_rows(self, report: TickReport) -> tuple[GuestStatus, ...]:
        for r in report.guests:
            if r.decision.notable:
                self._last[r.name] = r.change(report.t)
        for name in set(self._last) - {r.name for r in report.guests} - set(report.skipped):
            del self._last[name]
        # The record's fields from its __dict__: dict(record) goes through pydantic's __iter__,
        # 7 times slower, 15 ms a tick at 1,000 guests (benchmarks/results/tick.md).
        rows = (
            GuestStatus(**r.__dict__, last_action=self._last.get(r.name)) for r in report.guests
        )
        return tuple(sorted(rows, key=lambda g: g.name))


def _host(h: HostSample | None, verdict: HostVerdict | None) -> HostStatus | None:
    if h is None:
        return None
    return HostStatus(
        mem_total_kib=h.mem_total_kib,
        mem_available_kib=h.mem_available_kib,
        psi_some_avg10=h.psi_some_avg10,
        psi_full_avg10=h.psi_full_avg10,
        verdict=None if verdict is None else verdict.text,
        verdict_kind=None if verdict is None else str(verdict.kind),
    )


def _other_owner(path: Path, pid: int) -> int | None:
    """The pid of another live daemon that owns ``path``, or None if we may write it."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable or torn by hand: ours to replace
    other = doc.get("pid") if isinstance(doc, dict) else None
    if (
        isinstance(other, int)
        and other != pid
        and doc.get("state") == "running"
        and doc.get("hostname") == socket.gethostname()
        and pid_alive(other)
    ):
        return other
    return None
