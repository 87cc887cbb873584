"""Soak: the real daemon against every lab workload for a long run (default 30 minutes).

Checks what an operator would check after a night: no daemon error that is not accounted for,
no OOM kill in any guest (the guests' own counters), and a bounded daemon memory footprint
(VmRSS of the `autoballoon run` process at start, every 30 s, and at the end). Writes
`benchmarks/results/soak.md` and exits non-zero when a check fails.

Run as root with the lab set up: `python -m benchmarks.soak [--minutes 30]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from contrib.lab import GuestSpec, Lab, daemon_command, lab_lock, preset_policy_dir, start_daemon

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
GUESTS = [
    GuestSpec("ab-lab-s-idle", 384, "idle+cache:32"),
    GuestSpec("ab-lab-s-steady", 512, "steady:180"),
    GuestSpec("ab-lab-s-ramp", 512, "ramp:30:260:900"),
    # +40 MiB ten minutes in, for five minutes: smaller than the headroom, must never OOM
    GuestSpec("ab-lab-s-spike", 384, "spike:30:70:600:300"),
    GuestSpec("ab-lab-s-thrash", 512, "cache:32+thrash:160"),
]
# Log lines the soak accepts: said once per guest by design, not errors.
ACCOUNTED = ("no 6.12 pressure counters", "statistics period set", "reading the 6.12 counters")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=RESULTS / "soak.md")
    args = ap.parse_args()
    duration = args.minutes * 60
    with lab_lock("soak"):
        lab = Lab()
        guests = lab.up(GUESTS)
        start = {g.name: g.latest_report() or {} for g in guests}
        work = Path(tempfile.mkdtemp(prefix="ab-soak-"))
        policies = preset_policy_dir(work)
        log_path = work / "daemon.log"
        cmd = daemon_command(
            "ab-lab-s-*",
            policies,
            interval_s=args.interval,
            log_format="json",
            status_file=work / "status.json",
        )
        with log_path.open("w") as log:
            daemon = start_daemon(cmd, stderr=log, stdout=subprocess.DEVNULL)
            time.sleep(20)  # past start-up: imports, first connection
            rss = [(0.0, rss_kib(daemon.pid))]
            cpu0, t0 = cpu_s(daemon.pid), time.monotonic()
            while time.monotonic() - t0 < duration and daemon.poll() is None:
                time.sleep(30)
                rss.append((time.monotonic() - t0, rss_kib(daemon.pid)))
                print(
                    f"{rss[-1][0] / 60:5.1f} min  daemon RSS {rss[-1][1] / 1024:.1f} MiB",
                    flush=True,
                )
            alive = daemon.poll() is None
            cpu = (cpu_s(daemon.pid) - cpu0) / (time.monotonic() - t0) if alive else float("nan")
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=120)
        end = {g.name: g.latest_report() or {} for g in guests}
        sizes = {g.name: g.balloon_actual_mib() for g in guests}
        lab.down([g.name for g in guests])
        lab.close()

    lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
    problems = [
        x
        for x in lines
        if x["level"] in ("warning", "error", "critical")
        and not any(a in x["msg"] for a in ACCOUNTED)
    ]
    actions = [x for x in lines if "action" in x]
    ooms = {n: int(end[n].get("oom_kill", 0) - start[n].get("oom_kill", 0)) for n in end}
    stalls = {n: int(end[n].get("allocstall", 0) - start[n].get("allocstall", 0)) for n in end}
    rss_start, rss_end = rss[0][1], rss[-1][1]
    rss_max = max(r for _, r in rss)
    ok = alive and code == 0 and not problems and not any(ooms.values())
    ok = ok and rss_end <= rss_start * 1.25 + 4096
    out = [
        f"# Soak: {args.minutes:.0f} minutes, {len(GUESTS)} lab guests, real daemon",
        "",
        f"{cpu_model()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"policy presets/aggressive.toml (proactive), interval {args.interval} s.",
        "",
        f"- daemon alive at the end: {alive}; exit code after SIGTERM: {code}",
        f"- warnings/errors not accounted for: {len(problems)}",
        f"- balloon changes made: {len(actions)}",
        f"- daemon RSS: start {rss_start / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB, "
        f"max {rss_max / 1024:.1f} MiB; CPU {cpu:.1%} of one core",
        "",
        "| guest | workload | max MiB | final MiB | OOM kills | alloc stalls |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for spec in GUESTS:
        n = spec.domain_name
        out.append(
            f"| {n} | `{spec.workload}` | {spec.mem_mib} | {sizes[n]:.0f} | {ooms[n]} | "
            f"{stalls[n]} |"
        )
    out += ["", f"Verdict: {'PASS' if ok else 'FAIL'}", ""]
    if problems:
        out += ["Unaccounted log lines:", ""] + [
            f"- {p['level']}: {p['msg']}" for p in problems[:20]
        ]
    text = "\n".join(out) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
