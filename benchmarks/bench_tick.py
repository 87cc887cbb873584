"""Benchmark: what one whole tick costs at 1,000 guests, against libvirt's own bulk read.

    python -m benchmarks.bench_tick [--guests 1000] [--rounds 25] [--out FILE] [--profile]

One process, no lab guests: libvirt's test driver (``test:///default``, in this process) with
``--guests`` running domains (a balloon with a statistics period each). Each round times, one
after the other (interleaved, so that load on the machine hits all three alike):

- the bulk read: ``getAllDomainStats(BALLOON | STATE, ACTIVE)``, what libvirt itself costs;
- the core alone: ``decide.step`` on ``bench_core``'s realistic samples (every guest's counters
  move every tick), its loop closed (balloons follow the targets); after the ticks, the same on
  the older, calm input (``bench_core --calm``), to show how much that input flattered the core;
- the whole ``Controller.tick``: the real adapter (``LibvirtHypervisor``, ``extended_stats =
  "off"``: the test driver has no QMP), observe, the core, the live actuator, and the daemon's
  sinks (log lines to a file, the status file, metrics without an endpoint).

The test driver's statistics never move, so the adapter's readings get the same realistic
counters the core-alone rows use: written into each ``RawGuest`` after the real read. That
injection is timed on its own and taken off the tick's time (shown apart).

Reports medians over the rounds (after warm-up), the ratios to the bulk read, and the process's RSS
after the ticks (which includes the core-alone rows' engine, a second 1,000-guest history the
daemon does not hold) less what the test driver's domains added before the first tick (``VmRSS``
from /proc/self/status): the daemon's own RSS at that many guests, as near as one process can tell.
``--profile``: cProfile of the ticks instead (the functions with the most time of their own). Takes
about 30 s for 1,000 guests. """

from __future__ import annotations

import argparse
import cProfile
import gc
import logging
import pstats
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from autoballoon import daemon
from autoballoon.backends.libvirt import LibvirtHypervisor
from autoballoon.config import DaemonConfig
from autoballoon.core.decide import EngineState, step
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.samples import HostSample
from autoballoon.daemon import Controller
from autoballoon.hypervisor import Reading
from autoballoon.logs import make_formatter
from autoballoon.metrics import MetricsSink
from autoballoon.report import Sink
from autoballoon.sinks import LogSink
from autoballoon.status import StatusSink
from benchmarks.bench_core import make_guests, tick_samples
from benchmarks.common import emit

URI = "test:///default"
DOMAIN_XML = """<domain type='test'><name>{name}</name>
<memory unit='KiB'>{kib}</memory><currentMemory unit='KiB'>{kib}</currentMemory>
<vcpu>1</vcpu><os><type>hvm</type></os>
<devices><memballoon model='virtio'><stats period='5'/></memballoon></devices></domain>"""
INTERVAL_S = 5.0


def vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Moving:
    """The adapter, with each reading's statistics replaced by ``bench_core``'s realistic ones
    (the test driver's never move). Times the replacement, to take it off the tick."""

    def __init__(self, inner: LibvirtHypervisor, guests: list[dict[str, float]]) -> None:
        self.inner = inner
        self.guests = guests
        self.i = 0
        self.spent_s = 0.0
        self.errors = 0
        self.reconnects = 0

    def read(self, wanted: Callable[[str], bool]) -> Reading:
        reading = self.inner.read(wanted)
        t0 = time.perf_counter()
        self.i += 1
        actual = {g.name: g.actual_kib for g in reading.guests}
        fake = tick_samples(self.guests, 0.0, self.i, actual)
        for g in reading.guests:
            # RawGuest is frozen; written in place so that the replacement costs next to nothing
            object.__setattr__(g, "stats", fake[g.name].stats)
            object.__setattr__(g, "last_update", int(time.time()))
        self.spent_s += time.perf_counter() - t0
        return reading

    def set_balloon_kib(self, name: str, kib: int) -> None:
        self.inner.set_balloon_kib(name, kib)

    def close(self) -> None:
        self.inner.close()


class Stages:
    """Wall time per stage of the controller's ticks: the adapter's read, observe's own work
    (sanitising, samples), the core, the actuator, each sink (a few wrapped calls a tick)."""

    def __init__(self, controller: Controller, hv: Moving) -> None:
        self.spent: dict[str, list[float]] = {}
        self.tick: dict[str, float] = {}
        self.gc_s = self._gc_started = 0.0
        gc.callbacks.append(self.collecting)
        inner_read = hv.inner.read
        hv.inner.read = self.timed("read (adapter)", inner_read)  # type: ignore[method-assign]
        observe = controller.observer.observe
        controller.observer.observe = self.timed("observe", observe)  # type: ignore[method-assign]
        daemon.step = self.timed("core (decide.step)", step)
        controller.actuator.apply = self.timed(  # type: ignore[method-assign]
            "act", controller.actuator.apply
        )
        for sink in controller.sinks:
            sink.on_tick = self.timed(  # type: ignore[method-assign]
                f"sink {type(sink).__name__}", sink.on_tick
            )

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.tick[name] = self.tick.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    def collecting(self, phase: str, _info: dict[str, Any]) -> None:
        """A ``gc.callbacks`` hook: the cyclic collector's time, wherever it falls."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_s += time.perf_counter() - self._gc_started

    def end_tick(self, keep: bool, injected_s: float) -> None:
        if keep:
            # observe includes the read, and the read the injection: each stage on its own
            self.tick["observe"] -= self.tick.get("read (adapter)", 0.0)
            self.tick["read (adapter)"] -= injected_s
            for name, value in self.tick.items():
                self.spent.setdefault(name, []).append(value)
        self.tick = {}

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(v) for name, v in self.spent.items()}


def define(conn: Any, guests: list[dict[str, float]]) -> None:
    for k, g in enumerate(guests):
        kib = int(g["max_mib"] * 1024)
        conn.defineXML(DOMAIN_XML.format(name=f"vm-{k:05d}", kib=kib)).create()
    # the driver's own domain "test" (8 GiB, not ours) stays out of scope below


def sinks(tmp: Path) -> list[Sink]:
    handler = logging.FileHandler(tmp / "daemon.log")
    handler.setFormatter(make_formatter("human", "auto"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return [LogSink(), StatusSink(tmp / "status.json", uri=URI), MetricsSink(port=0)]


def run(n: int, rounds: int, profile: cProfile.Profile | None = None) -> dict[str, Any]:
    guests = make_guests(n)
    rss0 = vm_rss_kib()
    conn = libvirt.open(URI)
    define(conn, guests)
    rss_domains = vm_rss_kib() - rss0
    flags = libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_STATE
    active = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
    policies = PolicySet(GuestPolicy(mode="proactive"))
    with tempfile.TemporaryDirectory(prefix="bench-tick-") as tmp_name:
        tmp = Path(tmp_name)
        config = DaemonConfig(uri=URI, extended_stats="off", include=("vm-*",))
        hv = Moving(LibvirtHypervisor(URI, extended_stats="off"), guests)
        controller = Controller(config, hv, policies, sinks=sinks(tmp))
        stages = None if profile is not None else Stages(controller, hv)
        state, actual = EngineState(), {}
        host = HostSample(0, 256 << 20, 64 << 20)
        bulk, core, tick, inject = [], [], [], []
        warm = 3
        for i in range(warm + rounds):
            t0 = time.perf_counter()
            conn.getAllDomainStats(flags, active)
            t1 = time.perf_counter()
            samples = tick_samples(guests, 1000.0 + INTERVAL_S * i, i, actual)
            t2 = time.perf_counter()
            decisions, state = step(1000.0 + INTERVAL_S * i, host, samples, state, policies)
            t3 = time.perf_counter()
            actual = {d.guest: d.target_kib for d in decisions}
            before = hv.spent_s
            gc_before = stages.gc_s if stages is not None else 0.0
            if profile is not None and i >= warm:
                profile.enable()
            t4 = time.perf_counter()
            report = controller.tick()
            t5 = time.perf_counter()
            if profile is not None:
                profile.disable()
            if report.error or len(report.decisions) != n:
                raise SystemExit(f"tick {i}: {report.error or len(report.decisions)} guests")
            if stages is not None:
                stages.tick["Python's cyclic GC during the tick (also in the stage it fell in)"] = (
                    stages.gc_s - gc_before
                )
                stages.end_tick(i >= warm, hv.spent_s - before)
            if i >= warm:
                bulk.append(t1 - t0)
                core.append(t3 - t2)
                inject.append(hv.spent_s - before)
                tick.append(t5 - t4 - (hv.spent_s - before))
        status_bytes = (tmp / "status.json").stat().st_size
        acted = sum(1 for r in report.guests if r.decision.result == "applied")
        controller.finish()
        hv.close()
        daemon.step = step
        if stages is not None:
            gc.callbacks.remove(stages.collecting)
        rss = vm_rss_kib()
        del controller, hv, state, report, decisions, samples
    calm, calm_bulk = calm_core(conn, guests, rounds, policies, host)
    conn.close()
    med = {k: statistics.median(v) for k, v in
           (("bulk", bulk), ("core", core), ("tick", tick), ("inject", inject),
            ("calm", calm), ("calm_bulk", calm_bulk))}
    return med | {
        "guests": n, "rounds": rounds, "rss_kib": rss, "rss_domains_kib": rss_domains,
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "status_bytes": status_bytes, "acted_last": acted,
        "stages": stages.medians() if stages is not None else {},
    }


def calm_core(
    conn: Any, guests: list[dict[str, float]], rounds: int, policies: PolicySet, host: HostSample
) -> tuple[list[float], list[float]]:
    """The core alone on the calm input, after the ticks (the controller gone: a third engine's
    histories in the process would make every collection dearer), with its own bulk reads."""
    flags = libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_STATE
    state, actual = EngineState(), {}
    calm, bulk = [], []
    for i in range(3 + rounds):
        t0 = time.perf_counter()
        conn.getAllDomainStats(flags, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
        t1 = time.perf_counter()
        samples = tick_samples(guests, 1000.0 + INTERVAL_S * i, i, actual, calm=True)
        t2 = time.perf_counter()
        decisions, state = step(1000.0 + INTERVAL_S * i, host, samples, state, policies)
        t3 = time.perf_counter()
        actual = {d.guest: d.target_kib for d in decisions}
        if i >= 3:
            bulk.append(t1 - t0)
            calm.append(t3 - t2)
    return calm, bulk


def table(r: dict[str, Any]) -> str:
    b = r["bulk"]
    stages = "".join(
        f"| {name} | {v * 1e3:.1f} | {v / r['tick']:.0%} |\n" for name, v in r["stages"].items()
    )
    return (
        "| what | median ms | x bulk read |\n|---|---:|---:|\n"
        f"| bulk read `getAllDomainStats(BALLOON\\|STATE, ACTIVE)` | {b * 1e3:.2f} | 1 |\n"
        f"| core alone (`decide.step`, counters moving) | {r['core'] * 1e3:.1f} | "
        f"{r['core'] / b:.1f} |\n"
        f"| core alone on `bench_core --calm` input (calm guests' counters never move) | "
        f"{r['calm'] * 1e3:.1f} | {r['calm'] / r['calm_bulk']:.1f} |\n"
        f"| whole `Controller.tick` (observe, core, act, sinks) | {r['tick'] * 1e3:.1f} | "
        f"{r['tick'] / b:.1f} |\n\n"
        f"{r['guests']} running domains, {r['rounds']} rounds (after 3 warm-up ones), each the "
        "three timed in turn (the calm core afterwards, in rounds of its own with a bulk read "
        "each: its ratio is to those). Taken off the tick: the injection of the moving counters, "
        f"{r['inject'] * 1e3:.1f} ms median. Status file: {r['status_bytes'] / 1024:.0f} KiB. "
        f"Guests resized at the last tick: {r['acted_last']}.\n\n"
        f"RSS after the ticks: {r['rss_kib'] / 1024:.0f} MiB (peak {r['maxrss_kib'] / 1024:.0f} "
        f"MiB), of which the test driver's {r['guests']} domains, in this process, took "
        f"{r['rss_domains_kib'] / 1024:.0f} MiB before the first tick: the daemon's own, about "
        f"{(r['rss_kib'] - r['rss_domains_kib']) / 1024:.0f} MiB.\n\n"
        "Where the whole tick's time goes (median of each stage over the rounds; observe "
        "without the adapter's read, the read without the injection; the rest is the "
        "controller's own bookkeeping and the report values built on first use):\n\n"
        "| stage | median ms | of the tick |\n|---|---:|---:|\n" + stages
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guests", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--quick", action="store_true", help="200 guests, 5 rounds")
    ap.add_argument("--out", type=Path, help="also write the Markdown table here")
    ap.add_argument("--profile", action="store_true", help="profile the whole ticks instead")
    args = ap.parse_args()
    n, rounds = (200, 5) if args.quick else (args.guests, args.rounds)
    if args.profile:
        prof = cProfile.Profile()
        run(n, rounds, prof)
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(30)
        return
    emit(table(run(n, rounds)), args.out)


if __name__ == "__main__":
    main()
