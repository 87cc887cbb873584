"""`autoballoon status`: what the running daemon sees and did, from its status file.

Reads the file the daemon rewrites every tick (``autoballoon.status``); never talks to libvirt
and changes nothing, so it is safe to run at any time, as often as wanted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from autoballoon.config import DEFAULT_CONFIG, DaemonConfig, load_config
from autoballoon.policyfiles import PolicyFileError
from autoballoon.status import (
    EXIT_NOT_RUNNING,
    EXIT_RUNNING,
    EXIT_STALE,
    EXIT_UNREADABLE,
    StatusFileError,
    assess,
    read_status,
    render,
)

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
        tick = doc.get("last_tick") or {}
        out = doc | {
            "status": verdict.status,
            "message": verdict.message,
            "status_file": str(path),
            "checked_at": now,
            "last_tick_age_s": now - float(tick.get("t", now)),
        }
        print(json.dumps(out, indent=1, sort_keys=True))
    else:
        sys.stdout.write(render(doc, verdict, now))
    if verdict.exit_code != EXIT_RUNNING:
        print(verdict.message, file=sys.stderr)
    return verdict.exit_code
