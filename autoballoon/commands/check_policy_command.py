"""`autoballoon check-policy`: validate policy files, or explain a guest's effective policy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autoballoon import exits
from autoballoon.commands.release_command import read_balloons
from autoballoon.config import DEFAULT_CONFIG, POLICY_DIR_RULE, default_policy_dir, load_config
from autoballoon.core.policy import PolicySet
from autoballoon.core.samples import DomainTags
from autoballoon.explain import render_table
from autoballoon.observe import GuestScope
from autoballoon.policyfiles import PolicyFileError, check_file, load_policy_dir
from autoballoon.qmp import TAINT_NOTE
from autoballoon.release import why_not_resized


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
        help=f"policy directory (default: {POLICY_DIR_RULE})",
    )
    p.add_argument(
        "--explain",
        metavar="NAME",
        help="print the effective policy for guest NAME, as TOML, with where each value came from",
    )
    p.add_argument("--uuid", default="", help="with --explain: the guest's UUID, for UUID matches")
    p.add_argument(
        "--flavor", default="", help="with --explain: the guest's Nova flavor (<nova:flavor>)"
    )
    p.add_argument(
        "--metadata-policy",
        default="",
        metavar="NAME",
        help="with --explain: the policy the guest's <autoballoon:policy name=...> names",
    )
    p.add_argument(
        "--no-strict-modes",
        action="store_true",
        help="accept policy files writable by other users (not recommended)",
    )
    p.add_argument(
        "--uri",
        help="also check the policies against this libvirt URI's running guests: which policy "
        "each one gets, which ones would be left alone and why, and the custom-monitor taint",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="with --uri: the daemon config whose include/exclude and extended_stats apply "
        f"(default {DEFAULT_CONFIG} when it exists)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    strict = not args.no_strict_modes
    policy_dir = args.policies or default_policy_dir()
    if args.policies is None and not args.paths:
        print(f"policies: {policy_dir} (default: {POLICY_DIR_RULE})", file=sys.stderr)
    if args.explain:
        try:
            pset = load_policy_dir(policy_dir, strict_modes=strict)
            tags = DomainTags(args.metadata_policy, args.flavor)
            policy, sources = pset.resolve(args.explain, args.uuid, tags)
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
    loaded: PolicySet | None = None
    for path in paths:
        try:
            if path.is_dir():
                loaded = load_policy_dir(path, strict_modes=strict)
                print(f"ok: {path} (default + {len(loaded.layers)} per-VM file(s))")
            else:
                check_file(path)
                print(f"ok: {path}")
        except (PolicyFileError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            failures += 1
    if args.uri and loaded is not None and not failures:
        return check_live(args, loaded)
    return 1 if failures else 0


def check_live(args: argparse.Namespace, pset: PolicySet) -> int:
    """The policies against the running guests of ``args.uri``: each guest's policy or why
    the daemon would leave it alone, then the taint extended_stats = "qmp" causes."""
    from autoballoon.backends.libvirt import LibvirtHypervisor  # libvirt only when needed

    config_path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    try:
        config = load_config(config_path, {"uri": args.uri})
    except PolicyFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return exits.CONFIG
    hv = LibvirtHypervisor(config.uri, dry_run=True)
    try:
        guests = read_balloons(hv)
    finally:
        hv.close()
    if isinstance(guests, int):
        return guests
    scope = GuestScope(config.include, config.exclude)
    print(f"\nrunning guests on {config.uri}: {len(guests)}")
    errors = 0
    width = max((len(g.name) for g in guests), default=0)
    for g in sorted(guests, key=lambda g: g.name):
        why = why_not_resized(g, pset, scope)
        if why is None:
            policy, sources = pset.resolve(g.name, g.uuid, g.tags)
            print(f"  {g.name:<{width}}  managed: mode {policy.mode}, {' < '.join(sources)}")
        else:
            print(f"  {g.name:<{width}}  LEFT UNMANAGED: {why}")
            errors += why.startswith("policy error")
    if config.extended_stats == "qmp":
        managed = sum(why_not_resized(g, pset, scope) is None for g in guests)
        print(f"\ntaint: {managed} guest(s) would be tainted custom-monitor.\n{TAINT_NOTE}")
    else:
        print('\ntaint: none (extended_stats = "off": libvirt\'s standard statistics only)')
    return 1 if errors else 0
