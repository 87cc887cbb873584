"""`autoballoon check-policy`: validate policy files, or explain a guest's effective policy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autoballoon.config import DEFAULT_POLICY_DIR, default_policy_dir
from autoballoon.explain import render_table
from autoballoon.policyfiles import PolicyFileError, check_file, load_policy_dir


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "check-policy",
        help="validate policy files; --explain NAME shows a guest's effective policy",
        description=(
            "Validate policy files. With no PATH, the whole policy directory is loaded the way "
            "the daemon loads it (including precedence and permission checks). A PATH may be a "
            "directory or a single .toml file. Exit 0 when everything is valid; otherwise 1, "
            "with the file, field and fix on stderr."
        ),
    )
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    p.add_argument(
        "--policies",
        type=Path,
        default=None,
        help=f"policy directory (default: ./policies if present, else {DEFAULT_POLICY_DIR})",
    )
    p.add_argument(
        "--explain",
        metavar="NAME",
        help="print the effective policy for guest NAME, as TOML, with where each value came from",
    )
    p.add_argument("--uuid", default="", help="with --explain: the guest's UUID, for UUID matches")
    p.add_argument(
        "--no-strict-modes",
        action="store_true",
        help="accept policy files writable by other users (not recommended)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    strict = not args.no_strict_modes
    policy_dir = args.policies or default_policy_dir()
    if args.explain:
        try:
            pset = load_policy_dir(policy_dir, strict_modes=strict)
            policy, sources = pset.resolve(args.explain, args.uuid)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"# effective policy for guest {args.explain!r}")
        print("# layers, most general first: " + " < ".join(sources))
        print(render_table("policy", policy))
        print(render_table("host", pset.host))
        return 0
    paths = args.paths or [policy_dir]
    failures = 0
    for path in paths:
        try:
            if path.is_dir():
                pset = load_policy_dir(path, strict_modes=strict)
                print(f"ok: {path} (default + {len(pset.layers)} per-VM file(s))")
            else:
                check_file(path)
                print(f"ok: {path}")
        except (PolicyFileError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0
