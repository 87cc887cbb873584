"""Status file: the running daemon's state, for `autoballoon status`.

Sits after act, beside the other sinks. ``StatusSink`` (in the daemon) rewrites one JSON file
atomically at every tick; ``read_status``, ``assess`` and ``render`` (in the `status` command)
read it back. The file is mode 0600 in a directory created 0700: guest names, sizes and reasons
are the host administrator's business. Nothing here reads libvirt or changes a guest: the file
is a report, and the command that reads it cannot act.

Units in the file follow the rest of the daemon: sizes in KiB (``*_kib``), times in epoch
seconds (``*_at``, ``t``) and durations in seconds (``*_s``). The table shows MiB.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoballoon import __version__
from autoballoon.core.decide import Action
from autoballoon.core.units import KIB_PER_MIB

if TYPE_CHECKING:
    from autoballoon.daemon import Controller, TickReport

log = logging.getLogger("autoballoon")

FORMAT = 1
"""Version of the file's layout; bumped when a field changes meaning."""


def status_stale_after_s(interval_s: float, libvirt_retry_s: float) -> float:
    """How old the last write may be before the daemon counts as stuck.

    A tick may block for ``libvirt_retry_s`` while libvirt is unreachable and still finish
    (as a failed tick, which is written too); three missed intervals beyond that is no longer
    a slow tick.
    """
    return 3 * interval_s + libvirt_retry_s


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
        pid: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.pid = os.getpid() if pid is None else pid
        self.clock = clock
        self.started_at = clock()
        self.doc: dict[str, Any] | None = None
        self._guests: list[dict[str, Any]] = []
        self._host: dict[str, Any] | None = None
        self._skipped: dict[str, str] = {}
        self._results: dict[str, tuple[float, str]] = {}
        self._owned = False
        self._failing: str | None = None

    # --- the daemon side ---------------------------------------------------------------------
    def on_tick(self, report: TickReport, controller: Controller) -> None:
        self.doc = self._document(report, controller)
        self._publish(self.doc)

    def close(self) -> None:
        if self.doc is None or not self._owned:
            return
        now = self.clock()
        self.doc = self.doc | {"state": "stopped", "stopped_at": now, "updated_at": now}
        self._publish(self.doc)

    def _publish(self, doc: Mapping[str, Any]) -> None:
        try:
            if not self._owned:
                other = _other_owner(self.path, self.pid)
                if other is not None:
                    self._fail(
                        f"another autoballoon (pid {other}) publishes its status there; give "
                        "this one its own --status-file"
                    )
                    return
            write_atomic(self.path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
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

    def _document(self, report: TickReport, controller: Controller) -> dict[str, Any]:
        if report.error is None:
            self._host = _host(report)
            self._guests = self._guest_rows(report, controller)
            self._skipped = dict(report.skipped)
        # else: a failed tick read nothing; keep showing what the last good one saw.
        config = controller.config
        hv = controller.hypervisor
        metrics = None
        if config.metrics_port:
            metrics = f"http://{config.metrics_address}:{config.metrics_port}/metrics"
        return {
            "format": FORMAT,
            "state": "running",
            "pid": self.pid,
            "hostname": socket.gethostname(),
            "version": __version__,
            "mode": "dry-run" if report.dry_run else "live",
            "uri": config.uri,
            "interval_s": config.interval_s,
            "stale_after_s": status_stale_after_s(config.interval_s, config.libvirt_retry_s),
            "started_at": self.started_at,
            "updated_at": self.clock(),
            "stopped_at": None,
            "ticks": controller.ticks,
            "failed_ticks": controller.failed_ticks,
            "overruns": controller.overruns,
            "libvirt": {
                "errors": getattr(hv, "errors", None),
                "reconnects": getattr(hv, "reconnects", None),
            },
            "last_tick": {"t": report.t, "duration_s": report.duration_s, "error": report.error},
            "metrics_url": metrics,
            "host": self._host,
            "reclaimed_kib": sum(max(g["max_kib"] - g["actual_kib"], 0) for g in self._guests),
            "guests": self._guests,
            "skipped": self._skipped,
        }

    def _guest_rows(self, report: TickReport, controller: Controller) -> list[dict[str, Any]]:
        rows = []
        for d in report.decisions:
            if d.action is not Action.HOLD:
                self._results[d.guest] = (d.t, report.results.get(d.guest, ""))
        for name in set(self._results) - set(controller.last_action):
            del self._results[name]
        for d in report.decisions:
            s = report.samples[d.guest]
            last = controller.last_action.get(d.guest)
            last_doc = None
            if last is not None:
                when, result = self._results.get(d.guest, (None, None))
                last_doc = {
                    "t": last.t,
                    "action": str(last.action),
                    "from_kib": last.current_kib,
                    "to_kib": last.target_kib,
                    "class": str(last.klass),
                    "reason": last.reason,
                    "result": result if when == last.t else None,
                }
            rows.append(
                {
                    "name": d.guest,
                    "actual_kib": s.actual_kib,
                    "max_kib": s.max_kib,
                    "policy_max_kib": d.max_kib,
                    "floor_kib": d.floor_kib,
                    "available_kib": d.available_kib,
                    "rss_kib": report.rss_kib.get(d.guest),
                    "class": str(d.klass),
                    "basis": str(d.basis),
                    "stats": "extended" if s.has_extended else "standard" if s.stats else "none",
                    "source": report.sources.get(d.guest),
                    "decision": {
                        "action": str(d.action),
                        "target_kib": d.target_kib,
                        "reason": d.reason,
                        "clamped_by": d.clamped_by,
                    },
                    "last_action": last_doc,
                }
            )
        return sorted(rows, key=lambda r: str(r["name"]))


def _host(report: TickReport) -> dict[str, Any] | None:
    h = report.host
    if h is None:
        return None
    return {
        "mem_total_kib": h.mem_total_kib,
        "mem_available_kib": h.mem_available_kib,
        "psi_some_avg10": h.psi_some_avg10,
        "psi_full_avg10": h.psi_full_avg10,
    }


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


# --- the command side --------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Whether the daemon behind a status file is running, for people and for exit codes."""

    status: str
    """"running", "stale" (process alive, not ticking), "stopped", "not-running" or
    "unreadable"."""
    message: str
    exit_code: int


EXIT_RUNNING = 0
EXIT_NOT_RUNNING = 1
EXIT_STALE = 3
EXIT_UNREADABLE = 4


class StatusFileError(Exception):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


def read_status(path: Path) -> dict[str, Any]:
    """The status document; raises StatusFileError with the verdict when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StatusFileError(
            Verdict(
                "not-running",
                f"autoballoon is not running: no status file {path} (is the daemon started, "
                "and with this --status-file?)",
                EXIT_NOT_RUNNING,
            )
        ) from None
    except PermissionError:
        raise StatusFileError(
            Verdict(
                "unreadable",
                f"cannot read {path}: permission denied (it is readable by root only)",
                EXIT_UNREADABLE,
            )
        ) from None
    except OSError as err:
        raise StatusFileError(
            Verdict("unreadable", f"cannot read {path}: {err}", EXIT_UNREADABLE)
        ) from None
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise StatusFileError(
            Verdict("unreadable", f"{path}: not a status file ({err})", EXIT_UNREADABLE)
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StatusFileError(
            Verdict(
                "unreadable",
                f"{path}: not a status file of this autoballoon version (format "
                f"{doc.get('format') if isinstance(doc, dict) else '?'}, expected {FORMAT})",
                EXIT_UNREADABLE,
            )
        )
    return doc


def assess(
    doc: Mapping[str, Any],
    now: float,
    alive: Callable[[int], bool] = pid_alive,
) -> Verdict:
    """Running, stopped, dead or stuck: from the file, the pid and the age of the last write."""
    pid = int(doc.get("pid", 0))
    updated = float(doc.get("updated_at", 0.0))
    if doc.get("state") == "stopped":
        when = float(doc.get("stopped_at") or updated)
        return Verdict(
            "stopped",
            f"autoballoon is not running: pid {pid} stopped {age(now - when)} ago",
            EXIT_NOT_RUNNING,
        )
    if pid <= 0 or not alive(pid):
        return Verdict(
            "not-running",
            f"autoballoon is not running: pid {pid} is gone (it did not stop cleanly; last "
            f"update {age(now - updated)} ago)",
            EXIT_NOT_RUNNING,
        )
    limit = float(doc.get("stale_after_s", 60.0))
    if now - updated > limit:
        return Verdict(
            "stale",
            f"autoballoon is stale: pid {pid} is alive but its last tick was "
            f"{age(now - updated)} ago (ticks every {doc.get('interval_s', '?')} s)",
            EXIT_STALE,
        )
    return Verdict("running", f"autoballoon is running (pid {pid})", EXIT_RUNNING)


def age(seconds: float) -> str:
    """A short human age: 4 s, 12 min, 3 h, 2 d."""
    s = max(seconds, 0.0)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.0f} h"
    return f"{s / 86400:.0f} d"


def _mib(kib: object) -> str:
    return "-" if not isinstance(kib, int) else str(kib // KIB_PER_MIB)


def render(doc: Mapping[str, Any], verdict: Verdict, now: float) -> str:
    """The human view: a header about the daemon and host, a table of guests, last actions."""
    tick = doc.get("last_tick") or {}
    lv = doc.get("libvirt") or {}
    started = float(doc.get("started_at", now))
    if doc.get("state") == "stopped":
        ran = f"ran {age(float(doc.get('stopped_at') or now) - started)}"
    else:
        ran = f"up {age(now - started)}"
    lines = [
        f"{verdict.message}; {doc.get('mode')} on {doc.get('uri')}, {ran}",
        f"ticks: {doc.get('ticks')} every {doc.get('interval_s')} s, last "
        f"{age(now - float(tick.get('t', now)))} ago, took {float(tick.get('duration_s', 0)):.3f} s"
        f"; {doc.get('failed_ticks')} failed, {doc.get('overruns')} overruns",
        f"libvirt: {lv.get('errors', '-')} errors, {lv.get('reconnects', '-')} reconnects"
        + (f"; last tick FAILED: {tick['error']}" if tick.get("error") else ""),
    ]
    host = doc.get("host")
    if host:
        psi = ", ".join(
            f"{kind} {host[key]:.2f}%"
            for kind, key in (("some", "psi_some_avg10"), ("full", "psi_full_avg10"))
            if host.get(key) is not None
        )
        lines.append(
            f"host: {_mib(host.get('mem_available_kib'))} MiB available of "
            f"{_mib(host.get('mem_total_kib'))} MiB; memory PSI avg10 {psi or 'unavailable'}"
        )
    guests: list[dict[str, Any]] = list(doc.get("guests") or [])
    lines.append(f"reclaimed: {_mib(doc.get('reclaimed_kib'))} MiB from {len(guests)} guest(s)")
    lines.append("")
    if not guests:
        lines.append("no guest controlled")
    else:
        head = ("GUEST", "CUR", "MAX", "FLOOR", "AVAIL", "CLASS", "STATS", "LAST ACTION")
        rows = [head]
        for g in guests:
            last = g.get("last_action")
            did = "-"
            if last:
                did = f"{last['action']} {age(now - float(last['t']))} ago"
            rows.append(
                (
                    str(g["name"]),
                    _mib(g.get("actual_kib")),
                    _mib(g.get("max_kib")),
                    _mib(g.get("floor_kib")),
                    _mib(g.get("available_kib")),
                    str(g.get("class")),
                    str(g.get("stats")),
                    did,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        right = {1, 2, 3, 4}
        for r in rows:
            cells = [
                c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)
            ]
            lines.append("  ".join(cells).rstrip())
        lines.append("(sizes in MiB: balloon current/maximum/floor, guest's available memory)")
        actions = [g for g in guests if g.get("last_action")]
        if actions:
            lines += ["", "last actions:"]
            width = max(len(str(g["name"])) for g in actions)
            for g in actions:
                a = g["last_action"]
                failed = a.get("result") not in (None, "applied", "dry-run")
                lines.append(
                    f"  {str(g['name']):<{width}}  {age(now - float(a['t']))} ago: {a['action']} "
                    f"{_mib(a['from_kib'])} -> {_mib(a['to_kib'])} MiB: {a['reason']}"
                    + (f" FAILED ({a['result']})" if failed else "")
                )
    skipped: dict[str, str] = dict(doc.get("skipped") or {})
    if skipped:
        lines += ["", "not controlled:"]
        width = max(len(n) for n in skipped)
        lines += [f"  {n:<{width}}  {why}" for n, why in sorted(skipped.items())]
    return "\n".join(lines) + "\n"
