"""Benchmark 2a: what one tick costs at the libvirt edge, per guest, on the lab.

    python -m benchmarks.bench_adapter [--guests 8] [--reps 20] [--quick] [--out DIR]

Boots ``--guests`` idle lab guests (``ab-lab-b-ad-*``, 128 MiB) and times, with wall clocks:

- libvirt's bulk read as the adapter issues it (``getAllDomainStats(BALLOON | STATE, ACTIVE)``:
  every running domain on the host, ours and anybody else's), and the same read restricted to k
  of our guests (``domainListGetStats``), to see how it grows per domain;
- one QMP ``qom-get <balloon>/guest-stats`` through ``qemuMonitorCommand`` (the 6.12 counters);
- ``LibvirtHypervisor.read()`` over k guests with ``extended_stats = "off"`` and ``"qmp"``: the
  whole observe step of a tick as the daemon runs it;
- ``LibvirtHypervisor.set_balloon_kib()`` (the setter) and how long the balloon takes to get there;

then extrapolates a tick for 500 guests at a 1 s interval from the per-domain costs (with the pure
core's cost from ``bench_core``), and shows what the daemon does when a tick takes longer
than the interval: ``autoballoon run`` is started with its hypervisor's ``read()`` slowed to
1.3 s at a 0.5 s interval and its controller's tick and overrun counters are printed.

Writes ``<out>/adapter.md``. Holds the lab lock (``contrib.lab.lab_lock``) while guests exist.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autoballoon.core.units import KIB_PER_MIB
from benchmarks.common import (
    GUEST_PREFIX,
    REPO,
    RESULTS,
    header,
    other_domains,
    say,
)
from contrib.lab import daemon_command, lab_lock, preset_policy_dir


def timed(fn: Callable[[], object], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summary(xs: Sequence[float]) -> tuple[float, float]:
    """(median, 90th percentile) in milliseconds."""
    s = sorted(xs)
    return statistics.median(s) * 1e3, s[min(len(s) - 1, int(0.9 * len(s)))] * 1e3


OVERRUN_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    import autoballoon.daemon as daemon
    import autoballoon.backends.libvirt.facade as adapter

    DELAY = float(sys.argv[1])
    state = {"running": 0, "max_running": 0, "reads": 0}
    lock = threading.Lock()
    real_read = adapter.LibvirtHypervisor.read

    def slow_read(self, wanted):
        with lock:
            state["running"] += 1
            state["max_running"] = max(state["max_running"], state["running"])
            state["reads"] += 1
        try:
            time.sleep(DELAY)
            return real_read(self, wanted)
        finally:
            with lock:
                state["running"] -= 1

    adapter.LibvirtHypervisor.read = slow_read
    controllers = []
    real_init = daemon.Controller.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        controllers.append(self)

    daemon.Controller.__init__ = init
    from autoballoon.cli import main
    t0 = time.monotonic()
    code = main(sys.argv[2:])
    c = controllers[0]
    print("RESULT " + json.dumps(state | {"ticks": c.ticks, "overruns": c.overruns,
          "wall_s": time.monotonic() - t0, "exit": code}))
    """
)


def overrun_demo(guest: str, interval: float, delay: float, duration: float) -> dict[str, Any]:
    """`autoballoon run --dry-run` with every read() slowed down by `delay` seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-adapter-") as tmp:
        run = daemon_command(
            guest, preset_policy_dir(Path(tmp)), interval_s=interval, duration_s=duration,
            status_file=Path(tmp) / "status.json", log_level="warning", dry_run=True,
        )
        # the daemon's own command line, run through the script that slows read() down
        cmd = [sys.executable, "-c", OVERRUN_SCRIPT, str(delay), *run[3:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    result: dict[str, Any] = {"stderr": proc.stderr.strip().splitlines()[-6:]}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result |= json.loads(line[7:])
    result["warnings"] = [x for x in proc.stderr.splitlines() if "took longer" in x]
    return result


def core_cost_per_guest_s() -> float:
    """Median CPU per guest per tick of classify + decide at 500 guests (bench_core)."""
    from benchmarks.bench_core import bench

    median, _ = bench(500, 8)
    return median / 500


def measure(names: Sequence[str], conn: Any, reps: int) -> dict[str, Any]:
    import libvirt
    import libvirt_qemu

    from autoballoon.backends.libvirt import LibvirtHypervisor
    from autoballoon.observe import GuestScope
    from autoballoon.qmp import guest_stats_command, parse_balloon

    doms = [conn.lookupByName(n) for n in names]
    flags = libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_STATE
    res: dict[str, Any] = {"n_guests": len(names)}

    n_all = len(conn.getAllDomainStats(flags, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE))
    res["bulk_all"] = summary(timed(lambda: conn.getAllDomainStats(
        flags, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE), reps))
    res["bulk_all_domains"] = n_all

    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, len(names)) if k <= len(names)})
    res["ks"] = ks
    res["bulk_list"] = {k: summary(timed(lambda k=k: conn.domainListGetStats(doms[:k], flags),
                                         reps)) for k in ks}

    cmds = []
    for d in doms:
        balloon = parse_balloon(d.XMLDesc(0))
        assert balloon and balloon.qom_path, f"{d.name()}: no balloon alias"
        cmds.append(guest_stats_command(balloon.qom_path))
    qmp_times: list[float] = []
    for _ in range(reps):
        for d, cmd in zip(doms, cmds, strict=True):
            t0 = time.perf_counter()
            reply = json.loads(libvirt_qemu.qemuMonitorCommand(d, cmd, 0))
            qmp_times.append(time.perf_counter() - t0)
            assert "stat-alloc-stalls" in reply["return"]["stats"], reply
    res["qmp"] = summary(qmp_times)

    res["read"] = {}
    for mode in ("off", "qmp"):
        for k in ks:
            hv = LibvirtHypervisor(extended_stats=mode)
            scope = GuestScope(tuple(names[:k]))
            try:
                reading = hv.read(scope)  # first read: XML parsed, stats period checked
                assert len(reading.guests) == k, (mode, k, reading)
                assert all(g.source == ("qmp" if mode == "qmp" else "libvirt")
                           for g in reading.guests)
                res["read"][(mode, k)] = summary(timed(lambda h=hv, s=scope: h.read(s), reps))
            finally:
                hv.close()

    # Setters: down by 32 MiB and back, alternating, on every guest.
    hv = LibvirtHypervisor()
    set_times: list[float] = []
    settle: list[float] = []
    try:
        reading = hv.read(GuestScope(tuple(names)))
        sizes = {g.name: g.max_kib for g in reading.guests}
        for i in range(max(reps // 2, 2)):
            for name, dom in zip(names, doms, strict=True):
                target = sizes[name] - 32 * KIB_PER_MIB if i % 2 == 0 else sizes[name]
                t0 = time.perf_counter()
                hv.set_balloon_kib(name, target)
                set_times.append(time.perf_counter() - t0)
                if i < 2:  # time to reach the target, on the first two rounds only
                    while time.perf_counter() - t0 < 10:
                        if abs(dom.memoryStats()["actual"] - target) < KIB_PER_MIB:
                            settle.append(time.perf_counter() - t0)
                            break
                        time.sleep(0.02)
        for name in names:
            hv.set_balloon_kib(name, sizes[name])
    finally:
        hv.close()
    res["set"] = summary(set_times)
    res["settle"] = summary(settle) if settle else None
    return res


def render(res: dict[str, Any], demo: dict[str, Any], core_s: float, others: list[str],
           quick: bool) -> str:
    ks = res["ks"]
    n = res["n_guests"]
    n_all = res["bulk_all_domains"]
    bulk_per_dom = res["bulk_all"][0] / n_all
    read_off, read_qmp = res["read"][("off", n)][0], res["read"][("qmp", n)][0]
    py_off = max(read_off - res["bulk_all"][0], 0.0) / n
    qmp_extra = max(read_qmp - read_off, 0.0) / n
    big = 500
    changes = big // 10
    off_500 = big * (bulk_per_dom + py_off)
    qmp_500 = off_500 + big * qmp_extra
    set_500 = changes * res["set"][0]
    core_500 = core_s * big * 1e3
    tick_off = off_500 + set_500 + core_500
    tick_qmp = qmp_500 + set_500 + core_500
    lines = [
        header("Benchmark 2a: adapter cost per tick (libvirt bulk read, QMP, setters)"),
        ("**Quick smoke run.** " if quick else "")
        + f"{n} idle lab guests of ours (Linux 6.12, 128 MiB, QEMU TCG, 1 vCPU each) on libvirt "
        f"`qemu:///system`; wall-clock times, median and 90th percentile over the repetitions. "
        f"Other running domains (not ours; the host-wide bulk read returns them too): "
        f"{', '.join(others) or 'none'}.",
        "",
        "| call | guests | median ms | p90 ms | per guest ms (median) |",
        "|---|---:|---:|---:|---:|",
        f"| `getAllDomainStats(BALLOON\\|STATE, ACTIVE)`, as the adapter issues it | "
        f"{n_all} (every running domain) | {res['bulk_all'][0]:.2f} | "
        f"{res['bulk_all'][1]:.2f} | {bulk_per_dom:.2f} |",
    ]
    for k in ks:
        med, p90 = res["bulk_list"][k]
        lines.append(f"| `domainListGetStats`, same stats, k of our guests | {k} | {med:.2f} | "
                     f"{p90:.2f} | {med / k:.2f} |")
    lines.append(f"| QMP `qom-get <balloon>/guest-stats` via `qemuMonitorCommand` | 1 | "
                 f"{res['qmp'][0]:.2f} | {res['qmp'][1]:.2f} | {res['qmp'][0]:.2f} |")
    for mode in ("off", "qmp"):
        for k in ks:
            med, p90 = res["read"][(mode, k)]
            lines.append(f"| `LibvirtHypervisor(extended_stats=\"{mode}\").read()`, k of our "
                         f"guests in scope | {k} | {med:.2f} | {p90:.2f} | {med / k:.2f} |")
    lines.append(f"| `LibvirtHypervisor.set_balloon_kib()` | 1 | {res['set'][0]:.2f} | "
                 f"{res['set'][1]:.2f} | {res['set'][0]:.2f} |")
    if res["settle"]:
        lines.append(f"| time until the balloon reaches a target 32 MiB away (`actual` polled "
                     f"every 20 ms) | 1 | {res['settle'][0]:.0f} | {res['settle'][1]:.0f} | - |")
    lines += [
        "",
        "Every `read()` pays for the host-wide bulk read, whatever its include list: libvirt "
        "gathers the balloon statistics of every running domain (for QEMU that is one monitor "
        f"round trip per domain inside libvirtd: {bulk_per_dom:.2f} ms per domain here). On "
        f"top of it, the adapter's own work costs {py_off:.2f} ms per guest in scope, and the "
        f"QMP route (`qmp`) {qmp_extra:.2f} ms more per guest: one more monitor round trip "
        "each, issued one after the other.",
        "",
        f"## A host with {big} guests at a 1 s interval (extrapolated)",
        "",
        "| part of one tick | extended_stats=off | extended_stats=qmp |",
        "|---|---:|---:|",
        f"| observe: bulk read, {big} x {bulk_per_dom:.2f} ms + adapter {big} x {py_off:.2f} ms"
        f" | {off_500:.0f} ms | {off_500:.0f} ms |",
        f"| observe: QMP guest-stats, {big} x {qmp_extra:.2f} ms | - | "
        f"{qmp_500 - off_500:.0f} ms |",
        f"| act: {changes} setters (a tenth of the guests changing in one tick) | "
        f"{set_500:.0f} ms | {set_500:.0f} ms |",
        f"| classify + decide (pure core, bench_core: {core_s * 1e6:.0f} us per guest) | "
        f"{core_500:.0f} ms | {core_500:.0f} ms |",
        f"| **tick** | **{tick_off:.0f} ms** | **{tick_qmp:.0f} ms** |",
        "",
    ]
    verdict = []
    for label, tick in (("off", tick_off), ("qmp", tick_qmp)):
        if tick < 1000:
            verdict.append(f"with `{label}` a tick takes about {tick / 1000:.2f} s, inside a 1 s "
                           f"interval ({100 * tick / 1000:.0f} % of it)")
        else:
            verdict.append(f"with `{label}` a tick takes about {tick / 1000:.1f} s, longer than "
                           f"a 1 s interval: every other due tick would be dropped (counted as "
                           f"an overrun) and the daemon would in effect tick every "
                           f"{math.ceil(tick / 1000):.0f} s")
    lines += [
        f"At {big} guests, " + "; ".join(verdict) + ". Linear extrapolation from "
        f"{n} guests of ours and {n_all} running domains, measured under TCG on 2 cores shared "
        "with the guests' vCPUs"
        + (" (and with other people's lab guests)" if others else "")
        + "; libvirtd was not "
        f"measured with {big} domains and a KVM host was not measured. The daemon's default "
        "interval is 5 s, where either fits.",
        "",
        "## When a tick runs longer than the interval",
        "",
    ]
    if "ticks" in demo:
        lines += [
            f"`autoballoon run --dry-run --interval {demo['interval']:g}` against one lab guest "
            f"for {demo['duration']:g} s, with `LibvirtHypervisor.read()` slowed by "
            f"{demo['delay']:g} s (so every tick takes about {demo['delay']:g} s, "
            f"{demo['delay'] / demo['interval']:.1f} intervals): {demo['ticks']} ticks "
            f"completed, {demo['overruns']} late ticks dropped and counted "
            f"(`controller.overruns`, exported as `autoballoon_tick_overruns_total`), at most "
            f"{demo['max_running']} tick running at any time, exit code {demo['exit']}. The "
            "scheduler runs the tick job with `max_instances=1, coalesce=True`: a tick that "
            "falls due while the previous one still runs is skipped, not queued, so work never "
            "piles up; the daemon logs it at the 1st, 10th and every 100th overrun:",
            "",
            "```",
            *(w.strip()[:200] for w in demo["warnings"][:3]),
            "```",
            "",
        ]
    else:
        lines += ["The overrun demonstration failed: ", "```", *demo.get("stderr", []), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_adapter", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guests", type=int, default=8)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="2 guests, 5 repetitions")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.guests, args.reps = min(args.guests, 2), min(args.reps, 5)

    from contrib.lab import GuestSpec, Lab

    specs = [GuestSpec(f"{GUEST_PREFIX}ad-{i:02d}", 128, "idle") for i in range(args.guests)]
    names = [s.domain_name for s in specs]
    core_s = core_cost_per_guest_s()
    with lab_lock("bench_adapter"):
        lab = Lab()  # connected under the lock: libvirtd may have been restarted before
        try:
            lab.down(names)
            say(f"booting {len(specs)} idle guests")
            lab.up(specs)
            time.sleep(3)
            others = other_domains(lab.conn)
            res = measure(names, lab.conn, args.reps)
            say("overrun demonstration (autoballoon run, read() slowed down)")
            demo = overrun_demo(names[0], 0.5, 1.3, 6.0 if args.quick else 10.0)
            demo |= {"interval": 0.5, "delay": 1.3, "duration": 6.0 if args.quick else 10.0}
        finally:
            lab.down(names)
            lab.close()
    args.out.mkdir(parents=True, exist_ok=True)
    text = render(res, demo, core_s, others, args.quick)
    (args.out / "adapter.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
