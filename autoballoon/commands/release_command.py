"""`autoballoon release`: give guests their memory back (rollback, maintenance, uninstall).

Each guest named (or every running guest, with --all) is set back to its policy's maximum
(``max_mib`` when set, else the domain's), through ``autoballoon.release``, which decides as
the daemon does: a guest outside the config's include/exclude, opted out (``enabled = false``),
in observe mode or whose policy does not resolve is left as it is, and the command says so.
It takes the daemon's lock while it runs: releasing under a running daemon would be undone at
its next tick, so it refuses then (stop the service first).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoballoon import exits
from autoballoon.config import DEFAULT_CONFIG, load_config
from autoballoon.core.policy import PolicySet
from autoballoon.hostlock import HostLock, LockHeld
from autoballoon.hypervisor import CannotConnect, HypervisorError, RawGuest
from autoballoon.observe import GuestScope
from autoballoon.policyfiles import PolicyFileError, load_policy_dir
from autoballoon.release import apply_release, plan_release

if TYPE_CHECKING:  # libvirt is imported only when a command talks to it
    from autoballoon.backends.libvirt import LibvirtHypervisor

HELP = """\
Give guests back their memory: set each named guest (or, with --all, every running guest) to
its policy's maximum (max_mib, else the domain's maximum). Guests the daemon may not resize are
left as they are, and named: outside the config's include/exclude, opted out (enabled = false),
observe mode, or a policy error. Stop the daemon first: while it runs (it holds the lock), this
refuses, since its next tick would take the memory back.

Exit status: 0 done (or nothing to do), 1 a guest could not be resized or was not found,
3 invalid config or policy, 4 the URI cannot be opened, 5 the daemon is running,
75 libvirt does not answer.
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "release",
        help="give guests back their maximum memory (rollback; stop the daemon first)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("guests", nargs="*", metavar="GUEST", help="domain names")
    p.add_argument("--all", action="store_true", help="every running guest")
    p.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    p.add_argument("--config", type=Path, metavar="FILE", help="daemon config file (TOML)")
    p.add_argument("--uri", help="libvirt URI (default: the config's, qemu:///system)")
    p.add_argument("--policies", type=Path, dest="policy_dir", metavar="DIR")
    p.add_argument("--lock-file", type=Path, metavar="FILE", help="the daemon's lock file")
    p.add_argument(
        "--no-strict-modes",
        dest="strict_modes",
        action="store_const",
        const=False,
        help="accept policy files writable by other users",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoballoon.backends.libvirt import LibvirtHypervisor  # libvirt only when needed

    if bool(args.guests) == bool(args.all):
        print("error: name the guests to release, or --all (not both)", file=sys.stderr)
        return exits.USAGE
    overrides: dict[str, Any] = {
        "uri": args.uri,
        "policy_dir": args.policy_dir,
        "strict_modes": args.strict_modes,
        "lock_file": args.lock_file,
    }
    config_path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    try:
        config = load_config(config_path, overrides)
        policies = load_policy_dir(config.policy_dir, strict_modes=config.strict_modes)
    except PolicyFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return exits.CONFIG
    lock = HostLock(config.lock_path())
    if not args.dry_run:
        try:
            lock.acquire()
        except LockHeld as err:
            print(
                f"error: {err}: the daemon is running and would take the memory back; stop it "
                "first (systemctl stop autoballoon)",
                file=sys.stderr,
            )
            return exits.LOCKED
        except OSError as err:
            print(f"error: cannot take the lock {lock.path}: {err}", file=sys.stderr)
            return exits.LOCKED
    hv = LibvirtHypervisor(config.uri, dry_run=args.dry_run)
    try:
        return _release(hv, config.uri, policies, GuestScope(config.include, config.exclude), args)
    finally:
        hv.close()
        lock.release()


def read_balloons(hv: LibvirtHypervisor) -> list[RawGuest] | int:
    """The running guests' sizes, or (said on stderr) the exit code for why they cannot be
    read: shared with `check-policy --uri`."""
    try:
        hv.connect()
        return hv.balloons()
    except CannotConnect as err:
        print(f"error: {err}", file=sys.stderr)
        return exits.LIBVIRT_REFUSED
    except HypervisorError as err:
        print(f"error: libvirt does not answer: {err}", file=sys.stderr)
        return exits.LIBVIRT_UNREACHABLE


def _release(
    hv: LibvirtHypervisor,
    uri: str,
    policies: PolicySet,
    scope: GuestScope,
    args: argparse.Namespace,
) -> int:
    guests = read_balloons(hv)
    if isinstance(guests, int):
        return guests
    code = exits.OK
    if not args.all:
        found = {g.name for g in guests}
        for name in args.guests:
            if name not in found:
                print(f"guest {name}: not found among the running guests of {uri}")
                code = exits.FAILED
        guests = [g for g in guests if g.name in set(args.guests)]
    steps = plan_release(guests, policies, scope)
    results = {} if args.dry_run else apply_release(hv, steps)
    prefix = "[dry-run] " if args.dry_run else ""
    for s in steps:
        result = results.get(s.name, "applied")
        if s.to_kib is not None and result != "applied":
            print(f"{s.line()}: FAILED ({result})")
            code = exits.FAILED
        else:
            print(f"{prefix}{s.line(args.dry_run)}")
    given = sum(1 for s in steps if s.to_kib is not None and results.get(s.name) == "applied")
    if not args.dry_run:
        print(f"released {given} guest(s) of {len(steps)} on {uri}")
    return code
