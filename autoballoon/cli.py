"""The `autoballoon` command line: a thin dispatcher over ``autoballoon.commands``.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds its parser
and sets ``func`` (args -> exit code). Nothing here knows what a command does.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from autoballoon import __version__

COMMANDS = ("run", "check_policy", "replay", "status", "release")

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
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"autoballoon.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"autoballoon.commands.{name}":
                raise
            continue
        module.register(sub)
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
