"""Warm PostgreSQL twins: host memory won versus harm, measured against a twin over the same
seconds.

    python -m benchmarks.lab.pg [--modes none,fpr,...] [--sizes 896,768,...] [--pairs 3]
                                [--measure-s 180] [--mem 1024] [--short-mib 300]
                                [--render-only] [--quick]

Under TCG on a 2-core host, one guest's pgbench throughput moves by 25-75 % between runs and
within a run, so a guest measured alone against another run proves nothing about harm. Each
measurement here is a *pair*: two identical Debian 12 + PostgreSQL 15 lab guests
(``GuestSpec(kind="pg")``, contrib/lab/pg/) boot at once from the same image, fill their page
cache the same way (``warm:MEM``: the database's files, then as much of the disk as they have
memory) and run the same ``pgbench -c 4 -j 1`` over the same seconds. Once both are warm (the
guest-RAM part of QEMU's RSS at 85 % of the guest's size), one of them, the *treated* guest, is
put under the arm being measured; its *twin* gets nothing. Whatever the host does to one guest's
CPU it does to the other's too, so the treated/twin ratio of TPS, p99 latency and disk reads per
transaction shows the arm's effect. Pairs alternate which twin is treated (``a`` in even pairs,
``b`` in odd ones), so a difference between the two domains cannot pass for an effect.

Arms:

- a *mode*: ``none`` (nothing: the A/A pair, the instrument's own noise floor), ``fpr`` (free
  page reporting + deflate-on-OOM on the treated guest, no controller), ``on-demand`` (the
  daemon with the shipped default policy and a real host shortfall of ``--short-mib``: the host
  reserve is put that far above the host's MemAvailable), ``proactive``, ``proactive+fpr``,
  ``proactive-nocounters`` (``extended_stats = "off"``), ``aggressive+fpr`` (the aggressive
  preset). The daemon (``autoballoon run``, default 5 s tick) manages the treated guest only.
- a *fixed size* (``--sizes``): no controller; the treated guest's balloon is set once to that
  size when the measured phase starts and held. These pairs draw the frontier: host memory
  back against harm. Its *knee* is the smallest size with median TPS >= 0.95 and median p99
  <= 1.2 of the twin: the yardstick every mode is placed against.

Sampled every 2 s from the host, for both guests: QEMU's RSS, the RSS of the guest-RAM mapping
(``/proc/PID/smaps``), the balloon (libvirt), the virtio disk's read requests and bytes
(libvirt ``blockStats``) and the host's MemAvailable. From each guest's console: pgbench's 5 s
intervals (PGREPORT: transactions, p50/p99 latency), its own counters once a second (ABREPORT:
OOM kills, memory PSI totals). From the daemon's JSON log: each class change and resize.

Raw data of every pair is kept, gzipped, in benchmarks/results/raw/pg/ (committed, small);
``--render-only`` rebuilds pg.md, frontier.md and frontier.png from it. About 5
minutes per pair.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
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
    guest_ram_rss_kib,
    host_mem_available_kib,
    lab_lock,
    mode_policy_dir,
    qemu_pid,
    qemu_rss_kib,
    reserve_policy_dir,
    start_daemon,
)

TWINS = (GUEST_PREFIX + "pg-a", GUEST_PREFIX + "pg-b")
CLIENTS = 4
WARM_FRACTION = 0.85  # the guest-RAM mapping's RSS, of the guest's size, that counts as warm
SAMPLE_S = 2.0
RAW = RESULTS / "raw" / "pg"
DEFAULT_SIZES = (896, 768, 640, 512, 448, 384)


@dataclass(frozen=True)
class Mode:
    name: str
    what: str
    fpr: bool = False
    """free page reporting + deflate-on-OOM on the treated guest's balloon"""
    daemon: str | None = None
    """None: no controller; else the policy mode the daemon runs"""
    extended_stats: str = "qmp"
    preset: str = "default"
    """the shipped policy the daemon's mode is set in (``policies/`` default or a preset)"""


MODES = (
    Mode("none", "nothing on either twin: the A/A pair, the instrument's noise floor"),
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


def size_arm(mib: int) -> str:
    return f"size-{mib}"


def sample(guest: Guest, pid: int, mem_kib: int) -> dict[str, float]:
    rd_req, rd_bytes, *_ = guest.dom.blockStats("vda")
    return {
        "t": time.time(),
        "qemu_rss": qemu_rss_kib(pid),
        "ram_rss": guest_ram_rss_kib(pid, mem_kib),
        "balloon": guest.memory_stats()["actual"],
        "host_avail": host_mem_available_kib(),
        "rd_req": rd_req,
        "rd_bytes": rd_bytes,
    }


def is_warm(guest: Guest, last: dict[str, float], mem_kib: int) -> bool:
    return ("PGEVENT warm done" in guest.console_text() and bool(guest.pg_reports())
            and last["ram_rss"] >= WARM_FRACTION * mem_kib)


def policies_for(mode: Mode, work: Path, reserve_mib: int) -> Path:
    if mode.daemon == "on-demand":
        return reserve_policy_dir(work, reserve_mib)
    assert mode.daemon is not None
    return mode_policy_dir(work, mode.daemon, mode.preset)


def run_pair(arm: str, pair: int, mem_mib: int, measure_s: float, short_mib: int,
             warm_timeout_s: float = 420.0) -> dict[str, Any]:
    """Boot the twins, warm them, put ``twins[pair % 2]`` under ``arm``, measure both."""
    mode = BY_NAME.get(arm)
    size_mib = None if mode is not None else int(arm.removeprefix("size-"))
    treated = pair % 2
    mem_kib = mem_mib * 1024
    bench_s = int(warm_timeout_s + measure_s + 120)
    specs = [GuestSpec(name, mem_mib, f"warm:{mem_mib}+pgbench:{CLIENTS}:{bench_s}", kind="pg",
                       free_page_reporting=bool(mode and mode.fpr and i == treated),
                       autodeflate=bool(mode and mode.fpr and i == treated))
             for i, name in enumerate(TWINS)]
    samples: dict[str, list[dict[str, float]]] = {n: [] for n in TWINS}
    log_lines: list[str] = []
    reserve_mib = 0
    daemon: subprocess.Popen[str] | None = None
    with lab_lock(f"pg twins ({arm}, pair {pair})"), tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lab = Lab()
        try:
            lab.down(list(TWINS))
            t_boot = time.monotonic()
            guests = lab.up(specs, timeout=300)
            boot_s = time.monotonic() - t_boot
            pids = {g.name: qemu_pid(g.name) for g in guests}

            def take() -> None:
                for g in guests:
                    samples[g.name].append(sample(g, pids[g.name], mem_kib))

            say(f"{arm} pair {pair}: twins ready after {boot_s:.1f} s; warming both")
            t_warm = time.monotonic()
            while True:
                take()
                if all(is_warm(g, samples[g.name][-1], mem_kib) for g in guests):
                    break
                if time.monotonic() - t_warm > warm_timeout_s:
                    raise RuntimeError(f"twins not warm after {warm_timeout_s:.0f} s: "
                                       f"{ {n: s[-1] for n, s in samples.items()} }")
                time.sleep(SAMPLE_S)
            warm_s = time.monotonic() - t_warm
            say(f"{arm} pair {pair}: both warm after {warm_s:.0f} s; "
                f"treated {TWINS[treated]}")
            with contextlib.ExitStack() as stack:
                if mode is not None and mode.daemon == "on-demand":
                    reserve_mib = host_mem_available_kib() // 1024 + short_mib
                t0 = time.time()
                if size_mib is not None:
                    guests[treated].set_balloon_mib(size_mib)
                elif mode is not None and mode.daemon is not None:
                    cmd = daemon_command(
                        TWINS[treated], policies_for(mode, work, reserve_mib),
                        duration_s=measure_s, log_format="json",
                        extra=["--extended-stats", mode.extended_stats])
                    log = stack.enter_context((work / "daemon.log").open("w"))
                    daemon = start_daemon(cmd, stderr=log, stdout=subprocess.DEVNULL)
                deadline = time.monotonic() + measure_s
                while time.monotonic() < deadline:
                    take()
                    time.sleep(SAMPLE_S)
                take()
                if daemon is not None:
                    daemon.wait(timeout=60)
                t1 = time.time()
            if daemon is not None:
                log_lines = (work / "daemon.log").read_text().splitlines()
            time.sleep(10)  # pgbench's last intervals reach the console (4 KiB batches)
            twins: dict[str, Any] = {}
            for g in guests:
                latest = g.latest_report()
                offset = time.time() - latest["up"] if latest else 0.0
                twins[g.name] = {
                    "samples": samples[g.name],
                    "reports": [dict(r, t=r["up"] + offset) for r in g.console_reports()],
                    "pg": g.pg_reports(),
                    "alive_at_end": g.is_running(),
                }
        finally:
            lab.down(list(TWINS))
            lab.close()
    what = mode.what if mode is not None else f"balloon set once to {size_mib} MiB and held"
    return {
        "arm": arm, "pair": pair, "what": what, "machine": machine(), "mem_mib": mem_mib,
        "measure_s": measure_s, "size_mib": size_mib,
        "short_mib": short_mib if mode is not None and mode.daemon == "on-demand" else 0,
        "reserve_mib": reserve_mib, "treated": TWINS[treated], "twin": TWINS[1 - treated],
        "boot_s": boot_s, "warm_s": warm_s, "t0": t0, "t1": t1, "guests": twins,
        "events": [json.loads(x) for x in log_lines if x.startswith("{")],
        "daemon_rc": None if daemon is None else daemon.returncode,
    }


def raw_path(arm: str, pair: int, raw: Path = RAW) -> Path:
    return raw / f"{arm.replace('+', '-')}.{pair}.json.gz"


def save(r: dict[str, Any], raw: Path = RAW) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    path = raw_path(r["arm"], r["pair"], raw)
    with gzip.open(path, "wt") as f:
        json.dump(r, f, separators=(",", ":"))
    return path


def load_all(raw: Path = RAW) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(raw.glob("*.json.gz")):
        with gzip.open(path, "rt") as f:
            runs.append(json.load(f))
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.lab import pg_report

    ap = argparse.ArgumentParser(
        description="Warm PostgreSQL twins: one guest under an arm (a mode, or a fixed balloon "
        "size), its identical twin under nothing, the same pgbench load over the same seconds. "
        "Writes benchmarks/results/pg.md, frontier.md and frontier.png; raw data in "
        "benchmarks/results/raw/pg/.",
        epilog="modes: " + "; ".join(f"{m.name}: {m.what}" for m in MODES)
        + ". About 5 minutes per pair; pairs alternate which twin is treated.",
    )
    ap.add_argument("--modes", default=",".join(m.name for m in MODES),
                    help="comma-separated modes to run; '' for none (default: all)")
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                    help="comma-separated fixed balloon sizes (MiB) for the frontier; '' for "
                    "none (default: %(default)s)")
    ap.add_argument("--pairs", type=int, default=3,
                    help="pairs per arm (default 3); pair k treats twin a when k is even")
    ap.add_argument("--first-pair", type=int, default=0,
                    help="number of the first pair to run (to add pairs to kept data)")
    ap.add_argument("--mem", type=int, default=1024, help="guest memory, MiB (default 1024)")
    ap.add_argument("--measure-s", type=float, default=180.0,
                    help="seconds of the measured phase (default 180)")
    ap.add_argument("--short-mib", type=int, default=300,
                    help="host shortfall for the on-demand mode, MiB (default 300)")
    ap.add_argument("--render-only", action="store_true",
                    help="run nothing: rebuild the results from the kept raw data")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: one pair of mode none and one of size 512, 30 s each, "
                    "written to --out only (numbers mean nothing)")
    ap.add_argument("--out", type=Path, default=RESULTS,
                    help="directory for the results (default benchmarks/results)")
    ap.add_argument("--raw", type=Path, default=RAW,
                    help="directory of the raw pairs (default benchmarks/results/raw/pg)")
    args = ap.parse_args(argv)
    if args.quick:
        args.modes, args.sizes, args.pairs, args.measure_s = "none", "512", 1, 30.0
        if args.raw == RAW:
            args.raw = args.out / "raw-quick"
    modes = [x.strip() for x in args.modes.split(",") if x.strip()]
    unknown = [x for x in modes if x not in BY_NAME]
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--sizes takes MiB numbers separated by commas, got {args.sizes!r}")
    bad = [s for s in sizes if not 128 <= s < args.mem]
    if bad:
        ap.error(f"sizes {bad} out of range: each must be 128 <= size < --mem ({args.mem})")
    if not args.render_only:
        arms = modes + [size_arm(s) for s in sizes]
        todo = [(a, p) for a in arms for p in range(args.first_pair,
                                                      args.first_pair + args.pairs)]
        started = time.monotonic()
        for i, (arm, pair) in enumerate(todo, 1):
            say(f"pair {i}/{len(todo)}: {arm} #{pair} "
                f"({(time.monotonic() - started) / 60:.0f} min so far)")
            r = run_pair(arm, pair, args.mem, args.measure_s, args.short_mib)
            save(r, args.raw)
            say(f"{arm} #{pair}: {pg_report.pair_line(pg_report.summarize(r))}")
        say(f"{len(todo)} pairs in {(time.monotonic() - started) / 60:.1f} min")
    runs = load_all(args.raw)
    if not runs:
        ap.error(f"no raw data in {args.raw}: run some pairs first")
    written = pg_report.write(runs, args.out)
    say("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
