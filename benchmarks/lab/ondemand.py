"""On-demand mode against a host shortfall: how much does the daemon take for how much missing?

    python -m benchmarks.lab.ondemand [--minutes 3] [--short-mib 100] [--interval 5]
                                      [--out benchmarks/results/ondemand.md]

Three idle 1 GiB lab guests, the real daemon (``autoballoon run`` as a child process) with the
shipped default policy (``policies/default.toml``: on-demand mode) and one change: the host
reserve. Once the guests are up and the host has settled, the reserve is set to the host's
MemAvailable plus ``--short-mib``, so the daemon sees the host exactly that much short.

Why a reserve and not a process that holds the whole shortfall: on this shared 24 GiB host, a
real shortfall under the default 20 % reserve means holding about 19 GiB, which would leave the
other lab users (their guests, their test runs) a few GiB and risk the host's OOM killer taking
someone's QEMU. The reserve gives the controller the same input (host MemAvailable below its
reserve by S) with a shortfall of exactly the chosen size.

Why a small process that holds memory as well (``contrib.lab.hostmem.SteadyHost``, on unless
``--no-steady``): other users' processes move the host's MemAvailable by hundreds of MiB within
a minute (seen in the first run: +1 GiB two minutes in, which ended the shortfall). SteadyHost
starts by holding 512 MiB and then takes or releases memory every half second so MemAvailable
stays where it was when the daemon started: the shortfall stays S within one 16 MiB chunk, and
what ballooning gives back to the host is taken as well, so the shortfall does not respond to
inflation, which is the premise of the bound below. It is never more than 4 GiB.

Measured every second, from outside the daemon: the host's MemAvailable (/proc/meminfo), each
guest's balloon size and QEMU RSS (libvirt memoryStats). From the daemon's JSON log: every
balloon change it asked for. The check from the on-demand requirement: with a constant
shortfall S that does not respond to inflation, the total asked for stays within S plus one
inflate step per guest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    GUEST_PREFIX,
    RESULTS,
    down_fresh,
    header,
    machine,
    other_domains,
    placeholder,
    say,
)
from contrib.lab import (
    GuestSpec,
    Lab,
    autoballoon_command,
    daemon_command,
    host_mem_available_kib,
    lab_lock,
    preset_policies,
    reserve_policy_dir,
    run_daemon,
    start_daemon,
)
from contrib.lab.hostmem import SteadyHost

MEM_MIB = 1024
GUESTS = tuple(GuestSpec(f"{GUEST_PREFIX}od-{i}", MEM_MIB, "idle") for i in (1, 2, 3))
CHECKPOINTS_S = (30.0, 60.0, 90.0, 120.0, 150.0, 180.0)


def log_records(lines: Sequence[str]) -> list[dict[str, Any]]:
    """The daemon's JSON log lines, parsed; anything else (a traceback) as {"msg": line}."""
    out = []
    for line in lines:
        try:
            rec = json.loads(line) if line.startswith("{") else {"msg": line, "level": "raw"}
        except ValueError:
            rec = {"msg": line, "level": "raw"}
        out.append(rec)
    return out


def asked_mib(actions: Sequence[Mapping[str, Any]]) -> float:
    """Net memory asked for (inflations minus deflations) in the actions the host applied."""
    kib = sum(a["from_kib"] - a["to_kib"] for a in actions if a.get("result") == "applied")
    return kib / 1024


def run(minutes: float, short_mib: int, interval_s: float, work: Path, steady: bool
        ) -> dict[str, Any]:
    names = [g.domain_name for g in GUESTS]
    lab = Lab()  # connected under the lock: libvirtd may have been restarted before
    try:
        lab.down(names)
        say(f"booting {len(GUESTS)} idle 1 GiB guests")
        guests = lab.up(list(GUESTS))
        for g in guests:
            g.wait_for(lambda x: len(x.console_reports()) >= 2, timeout=60, what="two ABREPORTs")
        time.sleep(5)  # the QEMU processes have started; let the host's MemAvailable settle
        others = other_domains(lab.conn)
        host = SteadyHost(target_kib=0)  # adjusts nothing until entered
        if steady:
            host.hold_mib(512)  # what it can give back when someone else needs memory
            time.sleep(1)
        avail0_mib = host_mem_available_kib() / 1024
        host.target_kib = int(avail0_mib * 1024)
        reserve_mib = int(avail0_mib) + short_mib
        policies = reserve_policy_dir(work, reserve_mib)
        status = work / "status.json"
        cmd = daemon_command(
            f"{GUEST_PREFIX}od-*", policies, interval_s=interval_s, duration_s=minutes * 60,
            status_file=status, log_format="json",
        )
        say(f"host MemAvailable {avail0_mib:.0f} MiB, reserve {reserve_mib} MiB: short by "
            f"{reserve_mib - avail0_mib:.0f} MiB; autoballoon run for {minutes:g} min")
        log_path = work / "daemon.log"
        samples: list[dict[str, Any]] = []
        status_text = ""
        with log_path.open("w") as log, host if steady else contextlib.nullcontext():
            t0 = time.time()
            daemon = start_daemon(cmd, stdout=subprocess.DEVNULL, stderr=log)
            while daemon.poll() is None:
                row: dict[str, Any] = {"t": time.time() - t0,
                                       "host_avail_mib": host_mem_available_kib() / 1024,
                                       "held_mib": host.held_mib}
                for g in guests:
                    try:
                        st = g.memory_stats()
                    except Exception as err:  # libvirtd restarted by someone: note, go on
                        row[g.name] = {"error": repr(err)}
                        continue
                    row[g.name] = {"actual_mib": st["actual"] / 1024,
                                   "rss_mib": st.get("rss", 0) / 1024}
                samples.append(row)
                if not status_text and row["t"] >= minutes * 60 - 8:
                    out = run_daemon(autoballoon_command("status", "--status-file", str(status)),
                                     capture_output=True, timeout=30)
                    status_text = (out.stdout + out.stderr).strip()
                time.sleep(1.0)
        info = machine()  # at the end of the run, as the other benchmarks' headers
        records = log_records(log_path.read_text().splitlines())
        others = sorted(set(others) | set(other_domains(lab.conn)))
    finally:
        lab.close()
        down_fresh(names)  # a new connection: libvirtd may have restarted during the run
    step = preset_policies("default").default.inflate_step_ratio
    return {
        "machine": info,
        "minutes": minutes,
        "interval_s": interval_s,
        "t0": t0,
        "short_mib": short_mib,
        "reserve_mib": reserve_mib,
        "host_avail_start_mib": avail0_mib,
        "step_mib": step * 1024,
        "steady": steady,
        "steady_starved_s": host.starved_s,
        "steady_peak_mib": host.peak_mib,
        "exit": daemon.returncode,
        "cmd": ["autoballoon", *(placeholder(a, work) for a in cmd[3:])],
        "actions": [r for r in records if r.get("action") in ("inflate", "deflate")],
        "warnings": [r["msg"] for r in records
                     if r.get("level") in ("warning", "error", "critical", "raw")],
        "host_notes": sorted({r["msg"] for r in records
                              if "action" not in r and "host" in str(r.get("msg", ""))}),
        "samples": samples,
        "status": status_text,
        "other_domains": others,
        "guests": [g.domain_name for g in GUESTS],
    }


def at(raw: Mapping[str, Any], t: float) -> dict[str, float | None]:
    """Asked-for, balloon-taken, RSS, host MemAvailable and shortfall at ``t`` s into the run."""
    if not raw["samples"]:
        return {}
    s = ([x for x in raw["samples"] if x["t"] <= t] or raw["samples"][:1])[-1]
    acts = [a for a in raw["actions"] if a["ts"] - raw["t0"] <= t]
    taken = [MEM_MIB - s[n]["actual_mib"] for n in raw["guests"] if "actual_mib" in s.get(n, {})]
    rss = [s[n]["rss_mib"] for n in raw["guests"] if "rss_mib" in s.get(n, {})]
    return {
        "t": s["t"],
        "asked_mib": asked_mib(acts),
        "taken_mib": sum(taken) if len(taken) == len(raw["guests"]) else None,
        "rss_mib": sum(rss) if len(rss) == len(raw["guests"]) else None,
        "host_avail_mib": s["host_avail_mib"],
        "short_mib": raw["reserve_mib"] - s["host_avail_mib"],
        "held_mib": s.get("held_mib"),
    }


def render(raw: Mapping[str, Any], title: str) -> str:
    samples = raw["samples"]
    shorts = [raw["reserve_mib"] - s["host_avail_mib"] for s in samples]
    avails = [s["host_avail_mib"] for s in samples]
    first = at(raw, 0.0)
    bound = raw["short_mib"] + len(raw["guests"]) * raw["step_mib"]
    end = at(raw, samples[-1]["t"]) if samples else {}
    taken_end = end.get("taken_mib")
    lines = [
        header(title, raw.get("machine")),
        f"`{' '.join(raw['cmd'])}` (a child process; POLICY_DIR/default.toml is the shipped "
        f"`policies/default.toml` with `[host] reserve_mib = {raw['reserve_mib']}`: the host's "
        f"MemAvailable when the daemon started, {raw['host_avail_start_mib']:.0f} MiB, plus "
        f"{raw['short_mib']} MiB) managing {len(raw['guests'])} idle 1 GiB lab guests (Linux "
        f"6.12, QEMU TCG) for {raw['minutes']:g} min. Daemon exit code {raw['exit']}. Other "
        f"running domains on the host: {', '.join(raw['other_domains']) or 'none'}.",
        "",
        f"Host shortfall (reserve - MemAvailable) over the run: {min(shorts):.0f} to "
        f"{max(shorts):.0f} MiB (MemAvailable {min(avails):.0f} to {max(avails):.0f} MiB). "
        f"Bound from the requirement: shortfall + one inflate step per guest = "
        f"{raw['short_mib']} + {len(raw['guests'])} x {raw['step_mib']:.0f} = {bound:.0f} MiB. "
        + (f"SteadyHost held memory to keep MemAvailable steady (peak "
           f"{raw['steady_peak_mib']} MiB; it had nothing left to release for "
           f"{raw['steady_starved_s']:.0f} s)." if raw.get("steady") else
           "No SteadyHost: the shortfall moved with other users' memory."),
        "",
        "*asked for*: net balloon changes the daemon made (its JSON log: inflations minus "
        "deflations, applied). *balloon taken*: sum of (max - balloon size) from libvirt. "
        "*QEMU RSS*: sum over the three guests' QEMU processes (libvirt memoryStats `rss`; "
        "under TCG it includes QEMU's own translation cache).",
        "",
        "| s into the run | asked for MiB | balloon taken MiB | QEMU RSS MiB | host MemAvailable "
        "MiB | host short by MiB | held by SteadyHost MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    marks = [c for c in CHECKPOINTS_S if c <= raw["minutes"] * 60] + [samples[-1]["t"]]
    for c in [0.0, *marks]:
        r = at(raw, c)
        if not r:
            continue
        lines.append(
            f"| {r['t']:.0f} | {_f(r['asked_mib'])} | {_f(r['taken_mib'])} | {_f(r['rss_mib'])} "
            f"| {r['host_avail_mib']:.0f} | {r['short_mib']:.0f} | {_f(r['held_mib'])} |"
        )
    rss_gain = None
    if first.get("rss_mib") is not None and end.get("rss_mib") is not None:
        rss_gain = first["rss_mib"] - end["rss_mib"]  # type: ignore[operator]
    verdict = "n/a" if taken_end is None else (
        f"{taken_end:.0f} MiB taken for a {raw['short_mib']} MiB shortfall: "
        + ("within" if taken_end <= bound else "**over**") + f" the {bound:.0f} MiB bound")
    lines += [
        "",
        f"At the end: {verdict}; the guests' QEMU processes gave the host "
        f"{_f(rss_gain)} MiB of RSS back; {len(raw['actions'])} balloon changes, "
        f"{sum(a['action'] == 'deflate' for a in raw['actions'])} of them deflations.",
        "",
    ]
    if raw["warnings"]:
        lines += ["Warnings and errors the daemon logged:", "", "```",
                  *[w[:300] for w in raw["warnings"][:10]], "```", ""]
    if raw["host_notes"]:
        lines += ["What the daemon logged about the host:", "", "```",
                  *[n[:300] for n in raw["host_notes"][:10]], "```", ""]
    if raw["status"]:
        lines += ["`autoballoon status` near the end of the run:", "", "```",
                  *raw["status"].splitlines(), "```", ""]
    return "\n".join(lines)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lab.ondemand", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--short-mib", type=int, default=100, help="host shortfall to make (MiB)")
    ap.add_argument("--interval", type=float, default=5.0, help="tick interval (daemon default)")
    ap.add_argument("--no-steady", dest="steady", action="store_false",
                    help="do not hold memory to keep the host's MemAvailable steady")
    ap.add_argument("--title", default="On-demand mode against a host shortfall")
    ap.add_argument("--out", type=Path, default=RESULTS / "ondemand.md")
    ap.add_argument("--analyze-only", type=Path, metavar="RAW", help="only render a raw file")
    args = ap.parse_args(argv)
    if args.analyze_only:
        raw = json.loads(args.analyze_only.read_text())
    else:
        with lab_lock("ondemand"), tempfile.TemporaryDirectory(prefix="bench-od-") as tmp:
            raw = run(args.minutes, args.short_mib, args.interval, Path(tmp), args.steady)
        raw_path = RESULTS / "tmp" / f"{args.out.stem}-raw.json"
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        raw_path.write_text(json.dumps(raw))
        say(f"raw data {raw_path}")
    text = render(raw, args.title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0 if raw["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
