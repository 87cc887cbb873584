"""`autoballoon status`: what the running daemon sees and did, from its status file.

Reads the file the daemon rewrites every tick (written by ``autoballoon.status``, whose
``StatusDocument`` both sides share), judges whether the daemon is running, stopped, gone or
stuck (``assess``), and renders it for people (``render``) or as JSON. Never talks to libvirt
and changes nothing, so it is safe to run at any time, as often as wanted. The table shows MiB.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from autoballoon.config import DEFAULT_CONFIG, DaemonConfig, load_config
from autoballoon.core.decide import Action
from autoballoon.core.units import KIB_PER_MIB
from autoballoon.policyfiles import PolicyFileError
from autoballoon.status import FORMAT, StatusDocument, pid_alive


@dataclass(frozen=True)
class Verdict:
    """Whether the daemon behind a status file is running, for people and for exit codes."""

    status: str
    """"running", "failing" (ticking, but its ticks cannot read libvirt or /proc), "stale"
    (process alive, not ticking), "stopped", "not-running" or "unreadable"."""
    message: str
    exit_code: int


EXIT_RUNNING = 0
EXIT_NOT_RUNNING = 1
EXIT_STALE = 3
EXIT_UNREADABLE = 4
EXIT_FAILING = 5


class StatusFileError(Exception):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


def read_status(path: Path) -> StatusDocument:
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
    try:
        return StatusDocument.model_validate(doc)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors()[:3]
        )
        raise StatusFileError(
            Verdict("unreadable", f"{path}: not a status file ({problems})", EXIT_UNREADABLE)
        ) from None


def assess(
    doc: StatusDocument,
    now: float,
    alive: Callable[[int], bool] = pid_alive,
) -> Verdict:
    """Running, stopped, dead or stuck: from the file, the pid and the age of the last write."""
    pid = doc.pid
    updated = doc.updated_at
    if doc.state == "stopped":
        when = doc.stopped_at or updated
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
    if now - updated > doc.stale_after_s:
        return Verdict(
            "stale",
            f"autoballoon is stale: pid {pid} is alive but its last tick was "
            f"{age(now - updated)} ago (ticks every {doc.interval_s} s)",
            EXIT_STALE,
        )
    if doc.last_tick.error is not None:
        since = doc.failing_since or doc.last_tick.t
        good = doc.last_good_tick_at
        return Verdict(
            "failing",
            f"autoballoon is failing: pid {pid} runs but its ticks have failed for "
            f"{age(now - since)} ({doc.last_tick.error.splitlines()[0]}); last good tick "
            + (f"{age(now - good)} ago" if good is not None else "never"),
            EXIT_FAILING,
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


def _mib(kib: int | None) -> str:
    return "-" if kib is None else str(kib // KIB_PER_MIB)


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


def render(doc: StatusDocument, verdict: Verdict, now: float) -> str:
    """The human view: a header about the daemon and host, a table of guests, last actions."""
    tick = doc.last_tick
    lv = doc.libvirt
    if doc.state == "stopped":
        ran = f"ran {age((doc.stopped_at or now) - doc.started_at)}"
    else:
        ran = f"up {age(now - doc.started_at)}"
    lines = [
        f"{verdict.message}; {doc.mode} on {doc.uri}, {ran}",
        f"ticks: {doc.ticks} every {doc.interval_s} s, last "
        f"{age(now - tick.t)} ago, took {tick.duration_s:.3f} s"
        f"; {doc.failed_ticks} failed, {doc.overruns} overruns",
        f"libvirt: {_count(lv.errors)} errors, {_count(lv.reconnects)} reconnects"
        + (f"; last tick FAILED: {tick.error}" if tick.error else ""),
    ]
    host = doc.host
    if host:
        psi = ", ".join(
            f"{kind} {value:.2f}%"
            for kind, value in (("some", host.psi_some_avg10), ("full", host.psi_full_avg10))
            if value is not None
        )
        lines.append(
            f"host: {_mib(host.mem_available_kib)} MiB available of "
            f"{_mib(host.mem_total_kib)} MiB; memory PSI avg10 {psi or 'unavailable'}"
        )
        if host.verdict:
            lines.append(f"on-demand: {host.verdict}")
    guests = doc.guests
    lines.append(f"held back: {_mib(doc.reclaimed_kib)} MiB from {len(guests)} guest(s)")
    lines.append("")
    if not guests:
        lines.append("no guest controlled")
    else:
        head = ("GUEST", "CUR", "MAX", "FLOOR", "AVAIL", "CLASS", "STATS", "LAST ACTION")
        rows = [head]
        for g in guests:
            last = g.last_action
            did = "-" if last is None else f"{last.action} {age(now - last.t)} ago"
            rows.append(
                (
                    g.name,
                    _mib(g.actual_kib),
                    _mib(g.max_kib),
                    _mib(g.floor_kib),
                    _mib(g.available_kib),
                    str(g.klass),
                    g.stats + (" autodeflate" if g.autodeflate else ""),
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
        lines += ["", "now (what the last tick did or, in a dry run, would do, and why):"]
        width = max(len(g.name) for g in guests)
        for g in guests:
            d = g.decision
            verb = str(d.action)
            if d.action is not Action.HOLD:
                verb = ("would " if doc.mode == "dry-run" else "") + (
                    f"{d.action} {_mib(g.actual_kib)} -> {_mib(d.target_kib)} MiB"
                )
            lines.append(
                f"  {g.name:<{width}}  {verb} [{g.klass}]: {d.reason}"
                + (f" [rule {d.rule}]" if d.rule else "")
            )
            hint = g.stats_hint()
            if hint:
                lines.append(f"  {'':<{width}}  {hint}")
        actions = [(g.name, g.last_action) for g in guests if g.last_action is not None]
        if actions:
            lines += ["", "last actions:"]
            width = max(len(name) for name, _ in actions)
            for name, a in actions:
                failed = a.result not in (None, "applied", "dry-run")
                lines.append(
                    f"  {name:<{width}}  {age(now - a.t)} ago: {a.action} "
                    f"{_mib(a.from_kib)} -> {_mib(a.to_kib)} MiB: {a.reason}"
                    + (f" [rule {a.rule}]" if a.rule else "")
                    + (f" FAILED ({a.result})" if failed else "")
                )
    if doc.skipped:
        lines += ["", "not controlled:"]
        width = max(len(n) for n in doc.skipped)
        lines += [f"  {n:<{width}}  {why}" for n, why in sorted(doc.skipped.items())]
    return "\n".join(lines) + "\n"


HELP = f"""\
Show the running daemon's state: its guests (balloon current/maximum/floor, available memory,
pressure class, which statistics it is classified from, last action and why), the host's
available memory and PSI, and the daemon's own health (mode, ticks, libvirt errors).

The daemon rewrites its status file at every tick (--status-file; default from the [daemon]
table of --config, else {DaemonConfig().status_file}). It is readable by root only.

Exit status:
  {EXIT_RUNNING}  running
  {EXIT_NOT_RUNNING}  not running: no status file, the daemon stopped, or its process is gone
  {EXIT_STALE}  stale: the process is alive but has not ticked for much longer than its interval
  {EXIT_UNREADABLE}  the status file cannot be read (permission, or not a status file)
  {EXIT_FAILING}  failing: the daemon ticks, but its last tick could not read libvirt or /proc
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "status",
        help="show the running daemon's guests and health",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print the status document as JSON")
    p.add_argument("--status-file", type=Path, metavar="FILE", help="the daemon's status file")
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="daemon config file to take status_file from"
    )
    p.set_defaults(func=status)


def _status_file(args: argparse.Namespace) -> Path:
    if args.status_file is not None:
        return Path(args.status_file)
    config_path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    try:
        return load_config(config_path, {}).status_file
    except (PolicyFileError, OSError) as err:
        print(f"warning: {err}; using the default status file", file=sys.stderr)
        return DaemonConfig().status_file


def status(args: argparse.Namespace) -> int:
    path = _status_file(args)
    now = time.time()
    try:
        doc = read_status(path)
    except StatusFileError as err:
        v = err.verdict
        if args.json:
            out = {"status": v.status, "message": v.message, "status_file": str(path)}
            print(json.dumps(out, indent=1, sort_keys=True))
        print(v.message, file=sys.stderr)
        return v.exit_code
    verdict = assess(doc, now)
    if args.json:
        out = doc.to_json() | {
            "status": verdict.status,
            "message": verdict.message,
            "status_file": str(path),
            "checked_at": now,
            "last_tick_age_s": now - doc.last_tick.t,
        }
        print(json.dumps(out, indent=1, sort_keys=True))
    else:
        sys.stdout.write(render(doc, verdict, now))
    if verdict.exit_code != EXIT_RUNNING:
        print(verdict.message, file=sys.stderr)
    return verdict.exit_code
