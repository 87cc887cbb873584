"""The main job: the daemon live against demo guests in the lab, for a bounded time.

`make demo` runs this after setting up the host. It boots three tiny Linux 6.12 guests (idle,
steady, ramp) and lets each fill its page cache first, as a guest that has run for a while has
(a cold cache it read once: memory the host backs and the guest does not need). Then it starts
`autoballoon run` as a real process against them (policy: the shipped aggressive preset, so
things happen within minutes), streams its decisions, and ends with what the host got back
(the RSS of QEMU's guest RAM, start -> end), the memory held back from the guests, and
whether any guest suffered, from the guests' own counters.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from contrib.lab import (
    Guest,
    GuestSpec,
    Lab,
    LabError,
    autoballoon_command,
    daemon_command,
    guest_ram_rss_kib,
    lab_lock,
    preset_policy_dir,
    qemu_pid,
    run_daemon,
    start_daemon,
)

REPO = Path(__file__).resolve().parents[1]
# The recommended set-up (README): the balloon with deflate-on-OOM and free page reporting on.
RECOMMENDED = {"autodeflate": True, "free_page_reporting": True}
GUESTS = [
    GuestSpec("ab-lab-demo-idle", 512, "idle+cache:48+cold:288", **RECOMMENDED),
    GuestSpec("ab-lab-demo-steady", 512, "steady:200+cold:160", **RECOMMENDED),
    GuestSpec("ab-lab-demo-ramp", 512, "ramp:40:300:150+cold:96", **RECOMMENDED),
]
COLD_READ = "ABEVENT cold cache read"
FILL_TIMEOUT_S = 120.0


def rss_mib(g: Guest) -> float:
    """The RSS of the guest's RAM in its QEMU process (without QEMU's own heap and TCG
    translation cache, which grow on their own under TCG): what ballooning returns."""
    return guest_ram_rss_kib(qemu_pid(g.name), g.spec.mem_mib * 1024) / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="make demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=180.0, help="seconds to run (180)")
    ap.add_argument("--interval", type=float, default=2.0, help="tick interval (2 s)")
    ap.add_argument("--keep", action="store_true", help="leave the demo guests running")
    ap.add_argument(
        "--record",
        type=Path,
        default=REPO / "var" / "demo-trace.jsonl",
        help="trace file written by the daemon (for `autoballoon replay`)",
    )
    args = ap.parse_args(argv)
    with lab_lock("make demo", verbose=False):
        return demo(args)


def demo(args: argparse.Namespace) -> int:
    print(f"== booting {len(GUESTS)} lab guests (TCG: about 10 s)...", flush=True)
    try:
        lab = Lab()
        guests = lab.up(GUESTS)
    except LabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for g in guests:
        print(f"   {g.name:22} {g.spec.mem_mib} MiB  workload {g.spec.workload}")
    print("   balloons: deflate-on-OOM and free page reporting on (the recommended set-up)")
    print("== letting each guest fill its page cache (cold: read once, never again)...",
          flush=True)
    deadline = time.monotonic() + FILL_TIMEOUT_S
    while not all(COLD_READ in g.console_text() for g in guests):
        if time.monotonic() > deadline:
            print(f"error: a guest did not fill its cache in {FILL_TIMEOUT_S:.0f} s",
                  file=sys.stderr)
            lab.down([g.name for g in guests])
            return 1
        time.sleep(1)
    time.sleep(3)  # the last pages of the read are in; reports and RSS catch up
    start = {g.name: (g.latest_report() or {}) for g in guests}
    start_rss = {g.name: rss_mib(g) for g in guests}

    work = Path(tempfile.mkdtemp(prefix="autoballoon-demo-"))
    policies = preset_policy_dir(work)
    args.record.parent.mkdir(parents=True, exist_ok=True)
    args.record.unlink(missing_ok=True)
    cmd = daemon_command(
        "ab-lab-demo-*",
        policies,
        interval_s=args.interval,
        duration_s=args.duration,
        record=args.record,
        status_file=work / "status.json",
    )
    print(f"== running the daemon for {args.duration:.0f} s: {' '.join(cmd[1:])}", flush=True)
    sizes: dict[str, list[float]] = {g.name: [] for g in guests}
    stop = threading.Event()

    def sample_sizes() -> None:
        while not stop.wait(2.0):
            for g in guests:
                with contextlib.suppress(Exception):  # a guest going away: skip the sample
                    sizes[g.name].append(g.balloon_actual_mib())

    sampler = threading.Thread(target=sample_sizes, daemon=True)
    sampler.start()

    def show_status() -> None:
        status = autoballoon_command("status", "--status-file", str(work / "status.json"))
        out = run_daemon(status, capture_output=True)
        print("\n== `autoballoon status` near the end of the run:\n" + out.stdout, flush=True)

    threading.Timer(max(args.duration - 12, 1), show_status).start()
    daemon = start_daemon(cmd)
    try:
        code = daemon.wait(timeout=args.duration + 120)
    except KeyboardInterrupt:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    stop.set()
    sampler.join()

    print("\n== result (guest RAM held by QEMU, from the host; sizes from libvirt; harm from the "
          "guests' own counters)")
    header = (
        f"{'guest':22} {'host got back':>22} {'max':>5} {'final':>6} {'avg held back':>14} "
        f"{'oom kills':>9} {'stalls':>7}"
    )
    print(header)
    print("-" * len(header))
    harmed = 0
    total_avg = 0.0
    total_back = 0.0
    for g in guests:
        end = g.latest_report() or {}
        s = sizes[g.name] or [g.spec.mem_mib]
        avg_back = g.spec.mem_mib - sum(s) / len(s)
        total_avg += avg_back
        ooms = int(end.get("oom_kill", 0) - start[g.name].get("oom_kill", 0))
        stalls = int(end.get("allocstall", 0) - start[g.name].get("allocstall", 0))
        harmed += ooms
        rss_end = rss_mib(g)
        back = start_rss[g.name] - rss_end
        total_back += back
        rss = f"{back:.0f} ({start_rss[g.name]:.0f}->{rss_end:.0f})"
        print(
            f"{g.name:22} {rss:>18} MiB {g.spec.mem_mib:>5} {s[-1]:>6.0f} {avg_back:>10.0f} MiB "
            f"{ooms:>9} {stalls:>7}"
        )
    print(f"\nthe host got back (QEMU's guest-RAM RSS, start -> end): {total_back:.0f} MiB in "
          "total")
    print(f"memory held back from the guests (balloons), time-average: {total_avg:.0f} MiB")
    print("guests harmed (OOM kills): " + ("none" if harmed == 0 else str(harmed)))
    print(f"trace of this run: {args.record} (try `autoballoon replay {args.record}`)")
    if not args.keep:
        lab.down([g.name for g in guests])
    lab.close()
    shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
