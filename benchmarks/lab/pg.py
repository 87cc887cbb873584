"""Warm PostgreSQL guests: host memory won versus pgbench's harm, mode by mode.

    python -m benchmarks.lab.pg [--modes none,fpr,on-demand,...] [--measure-s 180]
                                [--mem 1024] [--short-mib 300] [--render-only] [--quick]

One Debian 12 + PostgreSQL 15 lab guest (``GuestSpec(kind="pg")``, contrib/lab/pg/) boots,
fills its page cache like a guest that has run for days (``warm:MEM``: the database's files,
then as much of its disk as it has memory) and runs ``pgbench -c 4 -j 1`` over its Unix
socket. Once the guest-RAM part of QEMU's RSS is within 15 % of the guest's size, the measured
phase starts, in one of the modes below (a fresh guest per mode, the same warm state):

- ``none``: no controller, a plain balloon;
- ``fpr``: free page reporting + deflate-on-OOM, no controller (what a careful operator
  switches on today without any daemon);
- ``on-demand``: autoballoon, the shipped default policy (on-demand), with a host shortfall
  of ``--short-mib``: the host reserve is put that far above the host's MemAvailable, so the
  daemon sees the host short by that much, and what ballooning returns to the host eases the
  shortfall as it would on a full host (``benchmarks.lab.ondemand`` covers the other case, a
  shortfall that does not respond);
- ``proactive``: autoballoon, the default policy with ``mode = "proactive"``;
- ``proactive+fpr``: the same, the guest with free page reporting + deflate-on-OOM;
- ``proactive-nocounters``: ``proactive`` with ``extended_stats = "off"`` (libvirt's standard
  balloon statistics only: what the 6.12 counters add);
- ``aggressive+fpr``: the shipped aggressive preset (proactive, 10 % steps every 10 s of calm)
  with free page reporting + deflate-on-OOM: what an operator who wants memory back fast runs.

The daemon runs as a child process (``autoballoon run``) with its default 5 s tick. Sampled
every 2 s from the host: QEMU's RSS (``VmRSS``; the TCG translation cache is capped at
128 MiB), the RSS of the guest-RAM mapping alone (from ``/proc/PID/smaps``), the balloon size
(libvirt) and the host's MemAvailable. From the guest's console: pgbench's 5 s intervals
(PGREPORT: transactions, p50/p99 latency) and OOM kills (ABREPORT). From the daemon's JSON
log: every class change and balloon change.

Each mode's raw data is kept in benchmarks/results/tmp/ (not committed); ``--render-only``
rebuilds pg.md and pg.png from it. About 4 minutes per mode.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import GUEST_PREFIX, RESULTS, machine, say
from contrib.lab import (
    Guest,
    GuestSpec,
    Lab,
    daemon_command,
    host_mem_available_kib,
    lab_lock,
    mode_policy_dir,
    reserve_policy_dir,
    start_daemon,
)

NAME = GUEST_PREFIX + "pg"
CLIENTS = 4
WARM_FRACTION = 0.85  # the guest-RAM mapping's RSS, of the guest's size, that counts as warm
SAMPLE_S = 2.0
DAEMON_TICK_S = 5.0  # the daemon's default interval
RAW = RESULTS / "tmp"


@dataclass(frozen=True)
class Mode:
    name: str
    what: str
    fpr: bool = False
    """free page reporting + deflate-on-OOM on the guest's balloon"""
    daemon: str | None = None
    """None: no controller; else the policy mode the daemon runs"""
    extended_stats: str = "qmp"
    preset: str = "default"
    """the shipped policy the daemon's mode is set in (``policies/`` default or a preset)"""


MODES = (
    Mode("none", "no controller, no free page reporting"),
    Mode("fpr", "free page reporting + deflate-on-OOM, no controller", fpr=True),
    Mode("on-demand", "autoballoon, default policy (on-demand), a real host shortfall",
         daemon="on-demand"),
    Mode("proactive", "autoballoon, default policy, mode = proactive", daemon="proactive"),
    Mode("proactive+fpr", "autoballoon proactive + free page reporting + deflate-on-OOM",
         fpr=True, daemon="proactive"),
    Mode("proactive-nocounters", "autoballoon proactive, extended_stats = off (no 6.12 counters)",
         daemon="proactive", extended_stats="off"),
    Mode("aggressive+fpr", "autoballoon, the aggressive preset (proactive, 10 % steps, stable "
         "10 s, cooldown 6 s) + free page reporting + deflate-on-OOM",
         fpr=True, daemon="proactive", preset="aggressive"),
)
BY_NAME = {m.name: m for m in MODES}


def qemu_pid(name: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())


def qemu_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def guest_ram_rss_kib(pid: int, mem_kib: int) -> int:
    """RSS of QEMU's guest-RAM mapping: the largest mapping at least the guest's size."""
    best_size, best_rss, size = 0, 0, 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if line.startswith("Size:"):
            size = int(line.split()[1])
        elif line.startswith("Rss:") and size >= mem_kib and size > best_size:
            best_size, best_rss = size, int(line.split()[1])
    return best_rss


def sample(guest: Guest, pid: int, mem_kib: int) -> dict[str, float]:
    return {
        "t": time.time(),
        "qemu_rss": qemu_rss_kib(pid),
        "ram_rss": guest_ram_rss_kib(pid, mem_kib),
        "balloon": guest.memory_stats()["actual"],
        "host_avail": host_mem_available_kib(),
    }


def warm_up(guest: Guest, pid: int, mem_kib: int, timeout_s: float,
            out: list[dict[str, float]]) -> float:
    """Sample until the guest has warmed its cache and pgbench reports; returns the seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        out.append(sample(guest, pid, mem_kib))
        warm = "PGEVENT warm done" in guest.console_text()
        if warm and guest.pg_reports() and out[-1]["ram_rss"] >= WARM_FRACTION * mem_kib:
            return time.monotonic() - t0
        time.sleep(SAMPLE_S)
    raise RuntimeError(f"not warm after {timeout_s:.0f} s: last sample {out[-1]}")


def policies_for(mode: Mode, work: Path, reserve_mib: int) -> Path:
    if mode.daemon == "on-demand":
        return reserve_policy_dir(work, reserve_mib)
    assert mode.daemon is not None
    return mode_policy_dir(work, mode.daemon, mode.preset)


def run(mode: Mode, mem_mib: int, measure_s: float, short_mib: int,
        warm_timeout_s: float = 300.0) -> dict[str, Any]:
    mem_kib = mem_mib * 1024
    bench_s = int(warm_timeout_s + measure_s + 120)
    spec = GuestSpec(NAME, mem_mib, f"warm:{mem_mib}+pgbench:{CLIENTS}:{bench_s}", kind="pg",
                     free_page_reporting=mode.fpr, autodeflate=mode.fpr)
    samples: list[dict[str, float]] = []
    log_lines: list[str] = []
    reserve_mib = 0
    with lab_lock(f"pg benchmark ({mode.name})"), tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lab = Lab()
        try:
            lab.down([NAME])
            t_boot = time.monotonic()
            (guest,) = lab.up([spec])
            boot_s = time.monotonic() - t_boot
            pid = qemu_pid(NAME)
            say(f"{mode.name}: {NAME} ready after {boot_s:.1f} s; warming")
            warm_s = warm_up(guest, pid, mem_kib, warm_timeout_s, samples)
            say(f"{mode.name}: warm after {warm_s:.0f} s: {samples[-1]}")
            daemon: subprocess.Popen[str] | None = None
            with contextlib.ExitStack() as stack:
                if mode.daemon == "on-demand":
                    reserve_mib = host_mem_available_kib() // 1024 + short_mib
                t0 = time.time()
                if mode.daemon is not None:
                    cmd = daemon_command(
                        NAME, policies_for(mode, work, reserve_mib), duration_s=measure_s,
                        log_format="json", extra=["--extended-stats", mode.extended_stats])
                    log = stack.enter_context((work / "daemon.log").open("w"))
                    daemon = start_daemon(cmd, stderr=log, stdout=subprocess.DEVNULL)
                deadline = time.monotonic() + measure_s
                while time.monotonic() < deadline:
                    samples.append(sample(guest, pid, mem_kib))
                    time.sleep(SAMPLE_S)
                if daemon is not None:
                    daemon.wait(timeout=60)
                t1 = time.time()
            if daemon is not None:
                log_lines = (work / "daemon.log").read_text().splitlines()
            time.sleep(10)  # pgbench's last intervals reach the console (4 KiB batches)
            latest = guest.latest_report()
            assert latest is not None
            offset = time.time() - latest["up"]  # host epoch of guest uptime 0
            reports = [dict(r, t=r["up"] + offset) for r in guest.console_reports()]
            pg = guest.pg_reports()
            alive = guest.is_running()
        finally:
            lab.down([NAME])
            lab.close()
    events = [json.loads(x) for x in log_lines if x.startswith("{")]
    return {"mode": mode.name, "what": mode.what, "machine": machine(), "mem_mib": mem_mib,
            "measure_s": measure_s, "short_mib": short_mib if mode.daemon == "on-demand" else 0,
            "reserve_mib": reserve_mib,
            "boot_s": boot_s, "warm_s": warm_s, "t0": t0, "t1": t1, "samples": samples,
            "reports": reports, "pg": pg, "events": events, "alive_at_end": alive,
            "daemon_rc": None if daemon is None else daemon.returncode}


def raw_path(mode: str) -> Path:
    return RAW / f"pg-{mode.replace('+', '-')}.json"


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.lab import pg_report

    ap = argparse.ArgumentParser(
        description="Warm PostgreSQL guest, one fresh guest per mode: host memory won (QEMU "
        "RSS, host MemAvailable) versus pgbench's TPS and latency. Writes "
        "benchmarks/results/pg.md and pg.png.",
        epilog="modes: " + "; ".join(f"{m.name}: {m.what}" for m in MODES),
    )
    ap.add_argument("--modes", default=",".join(m.name for m in MODES),
                    help="comma-separated modes to run (default: all, about 4 min each)")
    ap.add_argument("--mem", type=int, default=1024, help="guest memory, MiB (default 1024)")
    ap.add_argument("--measure-s", type=float, default=180.0,
                    help="seconds of the measured phase (default 180)")
    ap.add_argument("--short-mib", type=int, default=300,
                    help="host shortfall for the on-demand mode, MiB (default 300)")
    ap.add_argument("--render-only", action="store_true",
                    help="run nothing: rebuild pg.md and pg.png from the kept raw data")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: modes none and proactive, 30 s each (numbers mean little)")
    ap.add_argument("--out", type=Path, default=RESULTS,
                    help="directory for pg.md and pg.png (default benchmarks/results)")
    args = ap.parse_args(argv)
    if args.quick:
        args.modes, args.measure_s = "none,proactive", 30.0
    names = [x.strip() for x in args.modes.split(",") if x.strip()]
    unknown = [x for x in names if x not in BY_NAME]
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    if not args.render_only:
        RAW.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names, 1):
            say(f"mode {i}/{len(names)}: {name} ({BY_NAME[name].what})")
            r = run(BY_NAME[name], args.mem, args.measure_s, args.short_mib)
            raw_path(name).write_text(json.dumps(r))
            say(f"{name}: {pg_report.summarize(r)}")
    runs = [json.loads(raw_path(m.name).read_text()) for m in MODES if raw_path(m.name).exists()]
    if not runs:
        ap.error(f"no raw data in {RAW}: run some modes first")
    (args.out / "pg.md").write_text(pg_report.render(runs))
    pg_report.plot(runs, args.out / "pg.png")
    say(f"wrote {args.out / 'pg.md'} and pg.png ({len(runs)} modes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
