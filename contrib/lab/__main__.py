"""python -m contrib.lab up|down|status|build: the lab for humans (see contrib/lab/README.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from contrib.lab.lab import (
    DEFAULT_URI,
    NEW_STATS,
    U64_ABSENT,
    GuestSpec,
    Lab,
    LabError,
    build_image,
)

DEFAULT_GUESTS = (
    "idle:256:idle",
    "steady:384:steady:100",
    "cache:512:cache:160",
    "ramp:512:cache:32+ramp:50:250:120",
)

WORKLOAD_HELP = """workloads (join components with '+', e.g. cache:64+steady:100):
  idle                       boots and sits (16 MiB page cache, read once)
  cache:MIB                  MIB MiB reclaimable page cache (loop device), re-read every 5 s
  steady:MIB                 holds and keeps touching MIB MiB of anonymous memory
  ramp:FROM:TO:SECONDS       working set grows linearly FROM->TO MiB, then holds
  spike:BASE:PEAK:AT[:HOLD]  BASE MiB, jumps to PEAK MiB at AT s after boot (for HOLD s)
  thrash:MIB                 MIB MiB, continually freeing and re-faulting parts of it
"""


def _fmt_stats(stats: dict[str, int]) -> str:
    short = {k: ("absent" if stats.get(k) == U64_ABSENT else stats.get(k)) for k in NEW_STATS}
    return " ".join(f"{k.removeprefix('stat-')}={v}" for k, v in short.items())


def cmd_build(_: argparse.Namespace) -> int:
    print(build_image(quiet=False))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    specs = [GuestSpec.parse(g) for g in (args.guest or DEFAULT_GUESTS)]
    lab = Lab(args.uri)
    t0 = time.monotonic()
    guests = lab.up(specs, timeout=args.timeout)
    print(f"{len(guests)} guest(s) up in {time.monotonic() - t0:.1f}s ({lab.virt_type})")
    for g in guests:
        print(f"  {g.name:20s} {g.spec.mem_mib:5d} MiB  {g.spec.workload:28s} "
              f"ready after {lab.boot_seconds[g.name]:.1f}s  console {g.console_path}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    lab = Lab(args.uri)
    removed = lab.down(args.names or None)
    print("removed: " + (", ".join(removed) if removed else "nothing"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lab = Lab(args.uri)
    rows = lab.status()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no ab-lab-* domains")
    for row in rows:
        line = f"{row['name']:20s} {row['state']:9s} max {row['max_mib']} MiB"
        if "balloon_mib" in row:
            line += f"  balloon {row['balloon_mib']:.0f} MiB  rss {row.get('rss_mib', 0):.0f} MiB"
        print(line)
        rep = row.get("report")
        if rep:
            print(f"    guest: up {rep['up']:.0f}s MemTotal {rep['MemTotal'] // 1024} MiB "
                  f"MemAvailable {rep['MemAvailable'] // 1024} MiB ws {rep['ws_mib']} MiB "
                  f"oom_kill {rep['oom_kill']} allocstall {rep['allocstall']}")
            if "psi_some_avg10" in rep:
                print(f"    truth: psi some {rep['psi_some_avg10']}% full {rep['psi_full_avg10']}% "
                      f"(avg10) pass {rep['pass_ms']} ms alloc {rep['alloc_us_mib']} us/MiB "
                      f"swap free {rep['SwapFree'] // 1024}/{rep['SwapTotal'] // 1024} MiB")
            if "cg_oom_kill" in rep:
                print(f"    cgroup: {rep['cg_current'] // 1024} MiB ws {rep['cg_ws_mib']} MiB "
                      f"max {rep['cg_max']} oom_kill {rep['cg_oom_kill']} "
                      f"pgscan {rep['cg_pgscan']}")
        if row["state"] == "running":
            try:
                print("    qemu:  " + _fmt_stats(lab.guest(row["name"]).guest_stats()["stats"]))
            except (LabError, Exception) as exc:  # noqa: BLE001 - status is best effort
                print(f"    qemu:  guest-stats unavailable: {exc}")
    return 0


def cmd_period(args: argparse.Namespace) -> int:
    lab = Lab(args.uri)
    guest = lab.guest(args.name)
    if args.seconds is not None:
        guest.set_stats_period_s(args.seconds)
    print(f"{guest.name}: balloon stats period {guest.stats_period_s()} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m contrib.lab",
        description="The autoballoon lab: tiny Linux 6.12 guests (ab-lab-*) on libvirt/QEMU "
        "with controlled memory behaviour. Run `make setup` (as root) first.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=WORKLOAD_HELP,
    )
    parser.add_argument("--uri", default=DEFAULT_URI, help="libvirt URI (default %(default)s)")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("up", help="define and start guests, wait until they report",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=WORKLOAD_HELP + "\ndefault guests: " + " ".join(DEFAULT_GUESTS))
    p.add_argument("--guest", "-g", action="append", metavar="NAME:MEM_MIB:WORKLOAD",
                   help="a guest (repeatable); the domain is named ab-lab-NAME")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for boot")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="destroy and undefine ab-lab-* domains (all by default)")
    p.add_argument("names", nargs="*", help="only these guests")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="show ab-lab-* domains, guest reports and QEMU stats")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("period", help="show or set a guest's balloon stats period, live "
                       "(like `virsh dommemstat --period N --live`)")
    p.add_argument("name", help="the guest (ab-lab-NAME or NAME)")
    p.add_argument("seconds", nargs="?", type=int, help="new period in seconds (e.g. 10)")
    p.set_defaults(func=cmd_period)

    p = sub.add_parser("build", help="build (or reuse) the cached guest image")
    p.set_defaults(func=cmd_build)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
