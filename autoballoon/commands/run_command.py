"""`autoballoon run`: the daemon (or a dry run of it)."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import re
import signal
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

from autoballoon import exits
from autoballoon.config import DEFAULT_CONFIG, LIVE, DaemonConfig, flag_name, load_config
from autoballoon.logs import setup_logging
from autoballoon.policyfiles import PolicyFileError

HELP = """\
Run the controller. Every tick it reads each guest's balloon statistics, classifies its memory
pressure, decides a balloon target and applies it (with --dry-run: only logs what it would do,
changing nothing). Stops after the current tick on SIGTERM/SIGINT; SIGHUP reloads the config
file and policies (keeping the last good ones if the new ones are invalid); SIGUSR1 prints the
stack of every thread to stderr (the journal), to see where a daemon that seems stuck is.

{settings}

Exit status:
{codes}
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    settings = textwrap.fill(
        "Settings come from the [daemon] table of --config (default "
        f"{DEFAULT_CONFIG} when it exists); every flag below overrides the file. A reload "
        f"applies {', '.join(sorted(LIVE))} at once, and names any other changed setting as "
        "needing a restart.",
        width=95,
    )
    codes = "\n".join(f"  {code:<3} {what}" for code, what in exits.MEANING.items())
    p = sub.add_parser(
        "run",
        help="run the controller (or --dry-run it)",
        description=HELP.format(settings=settings, codes=codes),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="read live data and decide, but never change a balloon",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="take two readings one interval apart, act once, exit. It shows rescues and holds "
        "but no inflation: a guest must first be calm for its policy's stable_s (20 s by "
        "default), and --once has seen it calm for 0 s (only stable_s = 0 inflates here)",
    )
    p.add_argument(
        "--duration", type=float, metavar="S", help="stop by itself after S seconds (demos, tests)"
    )
    p.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="append every tick to a trace file (for `autoballoon replay`)",
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="daemon config file (TOML)")
    add_config_flags(p)
    p.set_defaults(func=run)


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ``DaemonConfig`` field: its name, type, choices and help come from the
    field itself, so a setting is declared once (in ``autoballoon.config``)."""
    for name, info in DaemonConfig.model_fields.items():
        flag = flag_name(name)
        default = info.default
        # The first sentence; two when the default needs words (it is None).
        help_text = _sentences(info.description or "", 2 if default is None else 1)
        kind = info.annotation
        args = typing.get_args(kind)
        if kind is bool:
            # A flag turns a default off or on: --no-strict-modes, never --strict-modes false.
            prefix = "no-" if default else ""
            p.add_argument(
                f"--{prefix}{flag}",
                dest=name,
                action="store_const",
                const=not default,
                help=f"turn {'off' if default else 'on'}: {help_text}",
            )
            continue
        extra: dict[str, Any] = {}
        if typing.get_origin(kind) is typing.Literal:
            extra["choices"] = list(args)
        elif typing.get_origin(kind) is tuple:
            extra.update(action="append", metavar="GLOB")
            help_text += " (repeatable)" if "repeatable" not in help_text else ""
        elif kind in (int, float):
            extra.update(type=kind, metavar="S" if name.endswith("_s") else "N")
        elif kind is Path or Path in args:
            extra.update(type=Path, metavar="DIR" if "dir" in name or "cgroup" in name else "FILE")
        else:
            extra["metavar"] = name.split("_")[-1].upper()
        shown = _show_default(default)
        if shown:
            help_text = help_text.removesuffix(".") + f" (default {shown})"
        p.add_argument(f"--{flag}", dest=name, help=help_text, **extra)


def _sentences(doc: str, n: int) -> str:
    """The first ``n`` sentences of a docstring, on one line (an "e.g. x" ends none)."""
    parts = re.split(r"(?<=\.)\s+(?=[A-Z`])", " ".join(doc.split()))
    return " ".join(parts[:n])


def _show_default(value: object) -> str:
    if value is None or value == ():
        return ""
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value).replace("%", "%%")


def run(args: argparse.Namespace) -> int:
    # Imported only when the daemon runs: the other commands need no libvirt or scheduler.
    from autoballoon.commands.wiring import build_hypervisor, build_sinks
    from autoballoon.daemon import run_daemon

    overrides: dict[str, Any] = {k: getattr(args, k) for k in DaemonConfig.model_fields}
    config_path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    try:
        config = load_config(config_path, overrides)
    except PolicyFileError as err:
        print(f"error: refusing to start: {err}", file=sys.stderr)
        return exits.CONFIG
    setup_logging(config.log_format, config.log_level, config.log_priority)
    # Written by the interpreter itself, from the signal handler: works even if no Python
    # code can run (a thread stuck in a C call holding the GIL). Needs a real stderr file;
    # without one (run from Python with stderr captured) SIGUSR1 keeps its default.
    with contextlib.suppress(OSError):
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    return run_daemon(
        config,
        build_hypervisor(config, dry_run=args.dry_run),
        lambda policies: build_sinks(config, policies, record=args.record, dry_run=args.dry_run),
        dry_run=args.dry_run,
        once=args.once,
        duration_s=args.duration,
        config_path=config_path,
        cli_overrides=overrides,
    )
