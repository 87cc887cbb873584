"""Benchmark 2b: the daemon's own footprint (memory, CPU) while it manages lab guests.

    python -m benchmarks.bench_footprint [--minutes 5] [--interval 5] [--quick] [--out DIR]

Boots four lab guests (``ab-lab-b-fp-*``: idle, steady, page cache, a ramp), starts the real
``autoballoon run`` as a child process against them (the shipped aggressive preset, so it acts;
the daemon's default interval of 5 s, statistics through QMP, no metrics endpoint, no trace), and
samples the process every second from /proc: VmRSS, VmHWM, threads, utime + stime. Reports the
resident memory over time and the CPU share (CPU seconds over wall seconds), over the whole life
of the process and after start-up, and the CPU per tick (ticks from the daemon's status file).

Writes ``<out>/footprint.md``. Holds the lab lock (``contrib.lab.lab_lock``) while guests exist.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    GUEST_PREFIX,
    RESULTS,
    down_fresh,
    header,
    other_domains,
    placeholder,
    say,
)
from contrib.lab import daemon_command, lab_lock, preset_policy_dir, start_daemon

CLK_TCK = os.sysconf("SC_CLK_TCK")
GUESTS = (
    ("idle", 512, "idle"),
    ("steady", 512, "steady:200"),
    ("cache", 512, "cache:128"),
    ("ramp", 512, "ramp:40:300:150"),
)


def proc_sample(pid: int) -> dict[str, float] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields: dict[str, float] = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(rest.split()[0]) / 1024  # MiB
        elif key == "Threads":
            fields[key] = int(rest.split()[0])
    after_comm = stat.rsplit(")", 1)[1].split()  # fields from 3 (state) on
    fields["cpu_s"] = (int(after_comm[11]) + int(after_comm[12])) / CLK_TCK  # utime, stime
    fields["t"] = time.monotonic()
    return fields


def run(minutes: float, interval: float, names_glob: str, work: Path) -> dict[str, Any]:
    status = work / "status.json"
    cmd = daemon_command(names_glob, preset_policy_dir(work), interval_s=interval,
                         duration_s=minutes * 60, status_file=status, log_level="warning")
    t_start = time.monotonic()
    proc = start_daemon(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples = []
    ticks: list[tuple[float, int]] = []
    while proc.poll() is None:
        s = proc_sample(proc.pid)
        if s is not None:
            samples.append(s)
        try:
            doc = json.loads(status.read_text())
            if not ticks or ticks[-1][1] != doc["ticks"]:
                ticks.append((time.monotonic(), int(doc["ticks"])))
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(1.0)
    out, err = proc.communicate()
    final = {}
    with contextlib.suppress(OSError, ValueError):
        final = json.loads(status.read_text())
    return {
        "t_start": t_start,
        "t_exit": time.monotonic(),
        "exit": proc.returncode,
        "samples": samples,
        "ticks": ticks,
        "final": final,
        "stderr": err.strip().splitlines()[-10:],
        "cmd": ["autoballoon", *(placeholder(a, work) for a in cmd[3:])],
    }


def render(r: dict[str, Any], minutes: float, interval: float, others: list[str],
           quick: bool) -> str:
    s = r["samples"]
    final = r["final"]
    first_tick_t = r["ticks"][0][0] if r["ticks"] else s[0]["t"]
    after = [x for x in s if x["t"] >= first_tick_t + 10] or s
    a, b = after[0], s[-1]
    steady_cpu = (b["cpu_s"] - a["cpu_s"]) / max(b["t"] - a["t"], 1e-9)
    life_cpu = b["cpu_s"] / max(b["t"] - r["t_start"], 1e-9)
    ticks_in = [n for t, n in r["ticks"] if a["t"] <= t <= b["t"]]
    per_tick_ms = None
    if len(ticks_in) >= 2:
        per_tick_ms = (b["cpu_s"] - a["cpu_s"]) / (ticks_in[-1] - ticks_in[0]) * 1e3
    guests = final.get("guests", [])
    reclaimed = final.get("reclaimed_kib", 0) / 1024
    lines = [
        header("Benchmark 2b: the daemon's footprint while it manages lab guests"),
        ("**Quick smoke run.** " if quick else "")
        + f"`{' '.join(r['cmd'])}` (a child process of the benchmark; POLICY_DIR holds "
        f"`policies/presets/aggressive.toml` as its default.toml) managing "
        f"{len(GUESTS)} lab guests ({', '.join(f'{n} {m} MiB `{w}`' for n, m, w in GUESTS)}), "
        f"Linux 6.12 under QEMU TCG, statistics through QMP. Sampled every second from "
        f"/proc/PID/status and /proc/PID/stat. Other running domains on the host: "
        f"{', '.join(others) or 'none'}.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| run length | {(s[-1]['t'] - r['t_start']) / 60:.1f} min ({minutes:g} asked), "
        f"exit code {r['exit']} |",
        f"| ticks (interval {interval:g} s) / failed / overruns | {final.get('ticks')} / "
        f"{final.get('failed_ticks')} / {final.get('overruns')} |",
        f"| resident memory (VmRSS) after the first tick | "
        f"{next((x['VmRSS'] for x in s if x['t'] >= first_tick_t), s[0]['VmRSS']):.1f} MiB |",
        f"| resident memory at the end | {s[-1]['VmRSS']:.1f} MiB "
        f"(anon {s[-1].get('RssAnon', 0):.1f}, file {s[-1].get('RssFile', 0):.1f}) |",
        f"| peak resident memory (VmHWM) | {max(x.get('VmHWM', 0) for x in s):.1f} MiB |",
        f"| threads | {s[-1].get('Threads', 0):.0f} |",
        f"| CPU share over the whole life (start-up included) | {100 * life_cpu:.2f} % of one "
        f"core ({b['cpu_s']:.1f} CPU s) |",
        f"| CPU share after start-up (from 10 s after the first tick) | "
        f"{100 * steady_cpu:.2f} % of one core |",
        f"| CPU per tick ({len(guests)} guests) | "
        f"{'n/a' if per_tick_ms is None else f'{per_tick_ms:.1f} ms'} |",
        f"| memory held back from the guests at the end | {reclaimed:.0f} MiB |",
        "",
        "| minute | VmRSS MiB | CPU share in that minute |",
        "|---:|---:|---:|",
    ]
    minute = 0
    prev = s[0]
    for x in s:
        if x["t"] - r["t_start"] >= (minute + 1) * 60 or x is s[-1]:
            share = (x["cpu_s"] - prev["cpu_s"]) / max(x["t"] - prev["t"], 1e-9)
            lines.append(f"| {minute + 1 if x is not s[-1] else (x['t'] - r['t_start']) / 60:.1f} "
                         f"| {x['VmRSS']:.1f} | {100 * share:.2f} % |")
            prev = x
            minute += 1
    lines.append("")
    if r["stderr"]:
        lines += ["Last lines the daemon logged (warnings and errors only):", "", "```",
                  *r["stderr"], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_footprint", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=5.0, help="tick interval (daemon default)")
    ap.add_argument("--quick", action="store_true", help="0.5 minutes")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.minutes = min(args.minutes, 0.5)

    from contrib.lab import GuestSpec, Lab

    specs = [GuestSpec(f"{GUEST_PREFIX}fp-{n}", m, w) for n, m, w in GUESTS]
    names = [x.domain_name for x in specs]
    with lab_lock("bench_footprint"), tempfile.TemporaryDirectory(prefix="bench-fp-") as tmp:
        lab = Lab()  # connected under the lock: libvirtd may have been restarted before
        try:
            lab.down(names)
            say(f"booting {len(specs)} guests")
            lab.up(specs)
            others = other_domains(lab.conn)
            say(f"autoballoon run for {args.minutes:g} min (interval {args.interval:g} s)")
            r = run(args.minutes, args.interval, f"{GUEST_PREFIX}fp-*", Path(tmp))
            others = sorted(set(others) | set(other_domains(lab.conn)))
        finally:
            lab.close()
            down_fresh(names)  # a new connection: libvirtd may have restarted during the run
    if not r["samples"]:
        print("the daemon exited before it could be sampled:\n" + "\n".join(r["stderr"]))
        return 1
    text = render(r, args.minutes, args.interval, others, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "footprint.md").write_text(text)
    print(text)
    return 0 if r["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
