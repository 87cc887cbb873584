"""The `autoballoon` command line: a thin dispatcher over ``autoballoon.commands``.

Each sub-command lives in its own module (``commands/NAME_command.py``) exposing
``register(subparsers)``, which adds its parser and sets ``func`` (args -> exit code). Nothing here
knows what a command does. The modules are imported here by name (not looked up at run time), so the
import contracts see this top layer; each keeps its heavy imports (libvirt, APScheduler,
prometheus-client) inside the function that needs them, so one command does not load another's.
"""

from __future__ import annotations

import argparse
import sys

from autoballoon import __version__
from autoballoon.commands import (
    check_policy_command,
    release_command,
    replay_command,
    run_command,
    status_command,
)

COMMANDS = (run_command, check_policy_command, replay_command, status_command, release_command)
"""In the order ``autoballoon --help`` lists them."""

DESCRIPTION = """\
autoballoon sizes each libvirt guest's virtio balloon from the guest's own memory-pressure
counters (Linux 6.12: oom-kills, alloc-stalls, scans, reclaims): it takes memory back from guests
that can spare it and gives it back at once when a guest starts to suffer.

Start with `autoballoon check-policy` to validate your policies, `autoballoon run --dry-run` to
see what it would do, then `autoballoon run`. `autoballoon <command> --help` explains each one.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoballoon",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"autoballoon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
