"""The PostgreSQL guest, warm, in one mode: host memory won versus pgbench's harm (first cut).

    python -m benchmarks.lab.pg --mode none|proactive [--mem 1024] [--measure-s 120]
                                [--interval 2] [--out benchmarks/results/pg-MODE.md]

One Debian 12 + PostgreSQL 15 lab guest (``GuestSpec(kind="pg")``, contrib/lab/pg/) boots,
fills its page cache like a guest that has run for days (``warm:MEM``: it reads the database's
files, then as much of its disk as it has memory) and then runs ``pgbench -c 4 -j 1`` over its
Unix socket. Once the guest-RAM part of QEMU's RSS is within 15 % of the guest's size, the
measured phase starts, in one mode:

- ``none``: no controller;
- ``proactive``: the daemon (``autoballoon run``, a child process) with the aggressive preset
  (proactive mode), every ``--interval`` seconds.

Sampled every ``--interval`` seconds from the host: QEMU's RSS (``VmRSS``; its TCG translation
cache is capped at 128 MiB for this guest), the RSS of the guest-RAM mapping alone (from
``/proc/PID/smaps``), the balloon size (libvirt) and the host's MemAvailable. From the guest's
console: pgbench's intervals (PGREPORT: transactions, p50/p99 latency) and OOM kills (ABREPORT).

A skeleton for the full baseline comparison: one guest, two modes, one run each. Free page
reporting, deflate-on-OOM, on-demand with a host shortfall and several guests are not here yet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import GUEST_PREFIX, RESULTS, header, say
from contrib.lab import (
    Guest,
    GuestSpec,
    Lab,
    daemon_command,
    host_mem_available_kib,
    lab_lock,
    preset_policy_dir,
    start_daemon,
)

MODES = ("none", "proactive")
NAME = GUEST_PREFIX + "pg"
CLIENTS = 4
WARM_FRACTION = 0.85  # the guest-RAM mapping's RSS, of the guest's size, that counts as warm


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


def sample_for(guest: Guest, pid: int, mem_kib: int, seconds: float, interval_s: float,
               out: list[dict[str, float]]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out.append(sample(guest, pid, mem_kib))
        time.sleep(interval_s)


def warm_up(guest: Guest, pid: int, mem_kib: int, timeout_s: float,
            out: list[dict[str, float]]) -> float:
    """Sample until the guest has warmed its cache and pgbench reports; returns the seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        out.append(sample(guest, pid, mem_kib))
        warm = "PGEVENT warm done" in guest.console_text()
        if warm and guest.pg_reports() and out[-1]["ram_rss"] >= WARM_FRACTION * mem_kib:
            return time.monotonic() - t0
        time.sleep(2)
    raise RuntimeError(f"not warm after {timeout_s:.0f} s: last sample {out[-1]}")


def run(mode: str, mem_mib: int, measure_s: float, interval_s: float,
        warm_timeout_s: float = 300.0) -> dict[str, Any]:
    mem_kib = mem_mib * 1024
    bench_s = int(warm_timeout_s + measure_s + 120)
    spec = GuestSpec(NAME, mem_mib, f"warm:{mem_mib}+pgbench:{CLIENTS}:{bench_s}", kind="pg")
    samples: list[dict[str, float]] = []
    with lab_lock(f"pg benchmark ({mode})"), tempfile.TemporaryDirectory() as tmp:
        lab = Lab()
        try:
            lab.down([NAME])
            t_boot = time.monotonic()
            (guest,) = lab.up([spec])
            boot_s = time.monotonic() - t_boot
            pid = qemu_pid(NAME)
            say(f"{NAME} ready after {boot_s:.1f} s; warming")
            warm_s = warm_up(guest, pid, mem_kib, warm_timeout_s, samples)
            say(f"warm after {warm_s:.0f} s: {samples[-1]}")
            t0 = time.time()
            daemon: subprocess.Popen[str] | None = None
            if mode == "proactive":
                policies = preset_policy_dir(Path(tmp), "aggressive")
                cmd = daemon_command(NAME, policies, interval_s=interval_s,
                                     duration_s=measure_s, log_format="json")
                log = (Path(tmp) / "daemon.log").open("w")
                daemon = start_daemon(cmd, stderr=log, stdout=subprocess.DEVNULL)
            sample_for(guest, pid, mem_kib, measure_s, interval_s, samples)
            if daemon is not None:
                daemon.wait(timeout=60)
                log.close()
            t1 = time.time()
            time.sleep(10)  # pgbench's last intervals reach the console (4 KiB batches)
            latest = guest.latest_report()
            assert latest is not None
            offset = time.time() - latest["up"]  # host epoch of guest uptime 0
            reports = [dict(r, t=r["up"] + offset) for r in guest.console_reports()]
            pg = [p for p in guest.pg_reports() if t0 <= p["t"] and p["t"] + p["interval"] <= t1]
        finally:
            lab.down([NAME])
            lab.close()
    return {"mode": mode, "mem_mib": mem_mib, "measure_s": measure_s, "interval_s": interval_s,
            "boot_s": boot_s, "warm_s": warm_s, "t0": t0, "t1": t1, "samples": samples,
            "reports": reports, "pg": pg}


def summarize(r: dict[str, Any]) -> dict[str, float]:
    steady = [s for s in r["samples"] if r["t0"] <= s["t"] <= r["t1"]]
    first, last = steady[0], steady[-1]
    pg = r["pg"]
    tx = sum(p["tx"] for p in pg)
    secs = sum(p["interval"] for p in pg)
    in_run = [x for x in r["reports"] if r["t0"] <= x["t"] <= r["t1"]]
    g0 = in_run[0] if in_run else {"Buffers": 0, "Cached": 0, "MemFree": 0}
    return {
        "cache_free_start_mib": (g0["Buffers"] + g0["Cached"] + g0["MemFree"]) / 1024,
        "returned_mib": (first["ram_rss"] - last["ram_rss"]) / 1024,
        "ram_rss_start_mib": first["ram_rss"] / 1024,
        "ram_rss_end_mib": last["ram_rss"] / 1024,
        "qemu_rss_start_mib": first["qemu_rss"] / 1024,
        "qemu_rss_end_mib": last["qemu_rss"] / 1024,
        "balloon_min_mib": min(s["balloon"] for s in steady) / 1024,
        "balloon_end_mib": last["balloon"] / 1024,
        "tps": tx / secs if secs else 0.0,
        "p50_median_ms": statistics.median(p["p50_ms"] for p in pg) if pg else 0.0,
        "p99_mean_ms": statistics.fmean(p["p99_ms"] for p in pg) if pg else 0.0,
        "p99_max_ms": max((p["p99_ms"] for p in pg), default=0.0),
        "intervals": len(pg),
        "failed": sum(p["failed"] for p in pg),
        "oom_kills": max((x["oom_kill"] for x in in_run), default=0)
        - min((x["oom_kill"] for x in in_run), default=0),
    }


def render(r: dict[str, Any], s: dict[str, float]) -> str:
    rows = [
        ("guest page cache + free memory at the start (Buffers + Cached + MemFree, MiB; "
         "Cached includes PostgreSQL's 128 MB of shared memory)",
         f"{s['cache_free_start_mib']:.0f}"),
        ("host memory returned (guest-RAM RSS start - end, MiB)", f"{s['returned_mib']:.0f}"),
        ("QEMU guest-RAM RSS, start -> end (MiB)",
         f"{s['ram_rss_start_mib']:.0f} -> {s['ram_rss_end_mib']:.0f}"),
        ("QEMU RSS (VmRSS, TCG cache capped at 128 MiB), start -> end (MiB)",
         f"{s['qemu_rss_start_mib']:.0f} -> {s['qemu_rss_end_mib']:.0f}"),
        ("balloon (guest memory), min / end (MiB)",
         f"{s['balloon_min_mib']:.0f} / {s['balloon_end_mib']:.0f}"),
        ("pgbench TPS (all transactions / seconds, measured phase)", f"{s['tps']:.1f}"),
        ("latency p50, median of the intervals' p50 (ms)", f"{s['p50_median_ms']:.1f}"),
        ("latency p99, mean / max of the intervals' p99 (ms)",
         f"{s['p99_mean_ms']:.1f} / {s['p99_max_ms']:.1f}"),
        ("pgbench intervals counted / failed transactions",
         f"{s['intervals']:.0f} / {s['failed']:.0f}"),
        ("guest OOM kills during the measured phase", f"{s['oom_kills']:.0f}"),
    ]
    lines = [
        header(f"PostgreSQL guest, mode `{r['mode']}`: first measurement"),
        "A first, single, short run (one guest, one mode), not yet the baseline comparison. "
        f"Guest: Debian 12 + PostgreSQL 15, {r['mem_mib']} MiB, 1 vCPU under TCG, "
        f"`pgbench -c {CLIENTS} -j 1` on a scale-20 database (321 MB, shared_buffers 128 MB). "
        f"Warmed first (database files and {r['mem_mib']} MiB of its disk read) until the "
        f"guest-RAM mapping's RSS reached {WARM_FRACTION:.0%} of its size: {r['warm_s']:.0f} s "
        f"(boot to PostgreSQL ready {r['boot_s']:.1f} s). Measured phase {r['measure_s']:.0f} s, "
        f"host samples every {r['interval_s']:.0f} s; pgbench intervals of 5 s wholly inside it. "
        "The host is shared with other users' processes (2 cores), so TPS is noisy.",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "Over time (host samples; seconds since the measured phase began):",
        "",
        "| t (s) | guest-RAM RSS (MiB) | QEMU RSS (MiB) | balloon (MiB) "
        "| host MemAvailable (MiB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    steady = [x for x in r["samples"] if r["t0"] <= x["t"] <= r["t1"]]
    for x in steady[:: max(1, len(steady) // 12)]:
        lines.append(f"| {x['t'] - r['t0']:.0f} | {x['ram_rss'] / 1024:.0f} | "
                     f"{x['qemu_rss'] / 1024:.0f} | {x['balloon'] / 1024:.0f} | "
                     f"{x['host_avail'] / 1024:.0f} |")
    lines += ["", "pgbench intervals (guest's PGREPORT lines):", "",
              "| t (s) | TPS | p50 (ms) | p99 (ms) |", "|---:|---:|---:|---:|"]
    for p in r["pg"]:
        lines.append(f"| {p['t'] - r['t0']:.0f} | {p['tps']:.1f} | {p['p50_ms']:.1f} | "
                     f"{p['p99_ms']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--mode", choices=MODES, required=True)
    ap.add_argument("--mem", type=int, default=1024, help="guest memory, MiB")
    ap.add_argument("--measure-s", type=float, default=120.0)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    r = run(args.mode, args.mem, args.measure_s, args.interval)
    s = summarize(r)
    out = args.out or RESULTS / f"pg-{args.mode}.md"
    out.write_text(render(r, s))
    raw = RESULTS / "tmp" / f"pg-{args.mode}-raw.json"  # not committed
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(r))
    say(f"wrote {out}: {s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
