"""`autoballoon run`: the daemon (or a dry run of it)."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import signal
import sys
from pathlib import Path
from typing import Any

from autoballoon.config import DEFAULT_CONFIG, load_config
from autoballoon.logs import setup_logging
from autoballoon.policyfiles import PolicyFileError

HELP = """\
Run the controller. Every tick it reads each guest's balloon statistics, classifies its memory
pressure, decides a balloon target and applies it (with --dry-run: only logs what it would do,
changing nothing). Stops after the current tick on SIGTERM/SIGINT; SIGHUP reloads the config
file and policies (keeping the last good ones if the new ones are invalid); SIGUSR1 prints the
stack of every thread to stderr (the journal), to see where a daemon that seems stuck is.

Settings come from the [daemon] table of --config (default /etc/autoballoon/autoballoon.toml
when it exists); every flag below overrides the file.
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="run the controller (or --dry-run it)",
        description=HELP,
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
    p.add_argument(
        "--policies",
        type=Path,
        dest="policy_dir",
        metavar="DIR",
        help="policy directory (default /etc/autoballoon/policies)",
    )
    p.add_argument("--uri", help="libvirt URI (default qemu:///system)")
    p.add_argument(
        "--interval",
        type=float,
        dest="interval_s",
        metavar="S",
        help="seconds between ticks (default 5)",
    )
    p.add_argument(
        "--stats-period",
        type=int,
        dest="stats_period_s",
        metavar="S",
        help="balloon stats period set on guests that have none (default 1)",
    )
    p.add_argument(
        "--extended-stats",
        choices=["qmp", "off"],
        help="read the 6.12 counters through QMP (default) or not",
    )
    p.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        help="manage only domains matching GLOB (repeatable; default all)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        metavar="GLOB",
        help="never manage domains matching GLOB (repeatable)",
    )
    p.add_argument("--log-format", choices=["human", "json"])
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on PORT (default off)",
    )
    p.add_argument("--metrics-address", metavar="ADDR", help="metrics bind address (127.0.0.1)")
    p.add_argument(
        "--status-file",
        type=Path,
        metavar="FILE",
        help="where `autoballoon status` finds the daemon's state",
    )
    p.add_argument(
        "--on-stop",
        choices=["leave", "deflate"],
        help="on a clean stop leave balloons (default) or deflate each guest to its policy's max",
    )
    p.add_argument(
        "--host-memory-cgroup",
        type=Path,
        metavar="DIR",
        help="protect this memory cgroup's limit (e.g. /sys/fs/cgroup/machine.slice) in "
        "on-demand mode instead of the whole host's memory",
    )
    p.add_argument(
        "--no-strict-modes",
        dest="strict_modes",
        action="store_const",
        const=False,
        help="accept policy files writable by other users",
    )
    p.set_defaults(func=run)


OVERRIDABLE = (
    "uri",
    "interval_s",
    "stats_period_s",
    "policy_dir",
    "strict_modes",
    "extended_stats",
    "include",
    "exclude",
    "log_format",
    "log_level",
    "metrics_port",
    "metrics_address",
    "status_file",
    "on_stop",
    "host_memory_cgroup",
)


def run(args: argparse.Namespace) -> int:
    # Imported only when the daemon runs: the other commands need no libvirt or scheduler.
    from autoballoon.commands.wiring import build_hypervisor, build_sinks
    from autoballoon.daemon import run_daemon

    overrides: dict[str, Any] = {k: getattr(args, k) for k in OVERRIDABLE}
    config_path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    try:
        config = load_config(config_path, overrides)
    except PolicyFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    setup_logging(config.log_format, config.log_level)
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
