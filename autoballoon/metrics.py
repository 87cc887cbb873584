"""Prometheus metrics: the daemon's state for scraping, on a read-only HTTP endpoint.

Sits after act, beside the other sinks. ``MetricsSink`` keeps one immutable snapshot of the last
tick and a private ``CollectorRegistry`` (never the global one, so tests and tools can run
several); the collector turns the snapshot into metric families when scraped. Per-guest series
exist only for guests of the last good tick, so a guest that went away disappears from the
output by itself. The endpoint answers GET only; there is nothing in it that can change state.

Units follow Prometheus: bytes and seconds; counters end in ``_total``. The guests' own
cumulative counters are exposed as counters (they restart at a guest reboot, which ``rate()``
handles), so any window can be chosen in PromQL; the class the controller derived from them is
``autoballoon_guest_class``.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from autoballoon import __version__
from autoballoon.core.classify import PressureClass
from autoballoon.core.decide import Action
from autoballoon.core.samples import (
    STAT_ALLOC_STALLS,
    STAT_ASYNC_RECLAIMS,
    STAT_ASYNC_SCANS,
    STAT_DIRECT_RECLAIMS,
    STAT_DIRECT_SCANS,
    STAT_MAJOR_FAULTS,
    STAT_OOM_KILLS,
    STAT_SWAP_IN,
    STAT_SWAP_OUT,
)
from autoballoon.core.units import BYTES_PER_KIB
from autoballoon.report import GuestRecord, Health, TickReport

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer


log = logging.getLogger("autoballoon")

PREFIX = "autoballoon"

TICK_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""A healthy tick takes milliseconds; busy guest monitors hold one for a read budget (2 s) and
each resize's, which the top buckets still resolve. An unreachable libvirt fails a tick at once."""

# The guest's cumulative counters: (stat, metric name, help, extra labels).
GUEST_COUNTERS: tuple[tuple[str, str, str, Mapping[str, str]], ...] = (
    (STAT_OOM_KILLS, "guest_oom_kills", "OOM kills inside the guest (6.12 counter).", {}),
    (
        STAT_ALLOC_STALLS,
        "guest_alloc_stalls",
        "Allocation stalls inside the guest (6.12 counter).",
        {},
    ),
    (
        STAT_ASYNC_SCANS,
        "guest_scanned_bytes",
        "Memory scanned by reclaim inside the guest (6.12 counter); kswapd is async.",
        {"reclaim": "async"},
    ),
    (
        STAT_DIRECT_SCANS,
        "guest_scanned_bytes",
        "Memory scanned by reclaim inside the guest (6.12 counter); kswapd is async.",
        {"reclaim": "direct"},
    ),
    (
        STAT_ASYNC_RECLAIMS,
        "guest_reclaimed_bytes",
        "Memory reclaimed inside the guest (6.12 counter); kswapd is async.",
        {"reclaim": "async"},
    ),
    (
        STAT_DIRECT_RECLAIMS,
        "guest_reclaimed_bytes",
        "Memory reclaimed inside the guest (6.12 counter); kswapd is async.",
        {"reclaim": "direct"},
    ),
    (STAT_SWAP_IN, "guest_swap_in_bytes", "Memory swapped in by the guest.", {}),
    (STAT_SWAP_OUT, "guest_swap_out_bytes", "Memory swapped out by the guest.", {}),
    (STAT_MAJOR_FAULTS, "guest_major_faults", "Major page faults in the guest.", {}),
)


@dataclass(frozen=True)
class Snapshot:
    """Everything a scrape shows, taken at the end of a tick (replaced whole, never mutated)."""

    dry_run: bool = False
    last_tick_t: float | None = None
    ticks: int = 0
    failed_ticks: int = 0
    overruns: int = 0
    libvirt_errors: int | None = None
    libvirt_reconnects: int | None = None
    host_available_bytes: int | None = None
    host_total_bytes: int | None = None
    psi_some_ratio: float | None = None
    psi_full_ratio: float | None = None
    guests: tuple[GuestRecord, ...] = ()
    counters: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Per guest: its cumulative counters (``GUEST_COUNTERS``) as last reported."""
    skipped: int = 0
    decisions: Mapping[tuple[str, str], int] = field(default_factory=dict)
    failed_actions: int = 0


class _SnapshotCollector(Collector):
    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink

    def collect(self) -> Iterable[Metric]:
        s = self.sink.snapshot  # one read: a scrape sees one tick, never a mix of two
        info = InfoMetricFamily(PREFIX, "The daemon's version and mode.")
        info.add_metric([], {"version": __version__, "mode": "dry-run" if s.dry_run else "live"})
        yield info

        def counter(name: str, doc: str, value: int | None) -> Iterable[Metric]:
            if value is not None:
                yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        yield from counter("ticks", "Ticks completed (observe, decide, act).", s.ticks)
        yield from counter(
            "failed_ticks",
            "Ticks skipped because the host could not be read (no decision made).",
            s.failed_ticks,
        )
        yield from counter(
            "tick_overruns",
            "Ticks dropped because the previous one was still running.",
            s.overruns,
        )
        yield from counter(
            "libvirt_errors", "libvirt calls that failed for one guest.", s.libvirt_errors
        )
        yield from counter(
            "libvirt_reconnects",
            "Times the libvirt connection was re-established.",
            s.libvirt_reconnects,
        )
        yield from counter(
            "action_failures",
            "Balloon changes that were decided but could not be applied.",
            s.failed_actions,
        )
        decisions = CounterMetricFamily(
            f"{PREFIX}_decisions",
            "Decisions made, one per controlled guest per tick, by action and pressure class "
            "(in dry-run, actions that would have been taken).",
            labels=["action", "class"],
        )
        for (action, klass), n in sorted(s.decisions.items()):
            decisions.add_metric([action, klass], n)
        yield decisions

        if s.last_tick_t is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_last_tick_timestamp_seconds",
                "When the last tick (good or failed) started, Unix time.",
                value=s.last_tick_t,
            )
        if s.host_available_bytes is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_host_memory_available_bytes",
                "The host's MemAvailable at the last good tick.",
                value=s.host_available_bytes,
            )
        if s.host_total_bytes is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_host_memory_total_bytes",
                "The host's MemTotal.",
                value=s.host_total_bytes,
            )
        for kind, value in (("some", s.psi_some_ratio), ("full", s.psi_full_ratio)):
            if value is not None:
                yield GaugeMetricFamily(
                    f"{PREFIX}_host_memory_pressure_{kind}_avg10_ratio",
                    f"The host's memory PSI '{kind}' avg10 (share of time stalled, 0 to 1).",
                    value=value,
                )
        yield GaugeMetricFamily(
            f"{PREFIX}_reclaimed_memory_bytes",
            "Memory held back from controlled guests: sum over them of balloon maximum minus "
            "current size.",
            value=sum(max(g.max_kib - g.actual_kib, 0) for g in s.guests) * BYTES_PER_KIB,
        )
        guests = GaugeMetricFamily(
            f"{PREFIX}_guests",
            "Guests seen at the last good tick, controlled or not (and why not in the logs).",
            labels=["state"],
        )
        guests.add_metric(["controlled"], len(s.guests))
        guests.add_metric(["skipped"], s.skipped)
        yield guests
        yield from _guest_metrics(s.guests, s.counters)


def _guest_metrics(
    guests: Iterable[GuestRecord], guest_counters: Mapping[str, Mapping[str, int]]
) -> Iterable[Metric]:
    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["guest", *labels])

    size = gauge("guest_balloon_bytes", "The guest's current balloon size (memory it has).")
    target = gauge(
        "guest_balloon_target_bytes",
        "The size decided at the last tick (equal to the current size when holding).",
    )
    top = gauge("guest_balloon_max_bytes", "The guest's maximum memory (the balloon's ceiling).")
    floor = gauge("guest_balloon_floor_bytes", "The policy's floor: never inflated below this.")
    available = gauge(
        "guest_available_bytes", "Memory available inside the guest, from its own report."
    )
    klass = gauge(
        "guest_class",
        "The guest's pressure class: 1 for the current class, 0 for the others.",
        ("class",),
    )
    extended = gauge(
        "guest_extended_stats",
        "1 when the guest reports the Linux 6.12 pressure counters, 0 when it is classified "
        "from the standard balloon statistics only.",
    )
    counters: dict[str, CounterMetricFamily] = {}
    for g in sorted(guests, key=lambda g: g.name):
        name = g.name
        size.add_metric([name], g.actual_kib * BYTES_PER_KIB)
        target.add_metric([name], g.decision.target_kib * BYTES_PER_KIB)
        top.add_metric([name], g.max_kib * BYTES_PER_KIB)
        floor.add_metric([name], g.floor_kib * BYTES_PER_KIB)
        if g.available_kib is not None:
            available.add_metric([name], g.available_kib * BYTES_PER_KIB)
        for c in PressureClass:
            klass.add_metric([name, str(c)], 1.0 if g.klass == c else 0.0)
        extended.add_metric([name], 1.0 if g.stats == "extended" else 0.0)
        own = guest_counters.get(name, {})
        for stat, metric, doc, extra in GUEST_COUNTERS:
            if stat not in own:
                continue
            family = counters.get(metric)
            if family is None:
                family = counters[metric] = CounterMetricFamily(
                    f"{PREFIX}_{metric}", doc, labels=["guest", *extra]
                )
            family.add_metric([name, *extra.values()], own[stat])
    yield from (size, target, top, floor, available, klass, extended)
    yield from counters.values()


class MetricsSink:
    """Keeps the scrape snapshot up to date; serves it on ``address:port`` when ``port`` > 0.

    ``port`` 0 keeps the registry (tests can read it with ``generate_latest``) without any
    endpoint. A port that cannot be bound is logged and the daemon goes on without metrics:
    control matters more than its dashboard.
    """

    def __init__(
        self,
        address: str = "127.0.0.1",
        port: int = 0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.snapshot = Snapshot()
        self._decisions: Tally[tuple[str, str]] = Tally()
        self._failed_actions = 0
        self.tick_duration = Histogram(
            f"{PREFIX}_tick_duration_seconds",
            "Time one tick took to observe, decide and act (the sinks are not included).",
            buckets=TICK_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_SnapshotCollector(self))
        ProcessCollector(registry=self.registry)  # the daemon's own memory, CPU, open files
        self.server: WSGIServer | None = None
        self.url: str | None = None
        if port:
            try:
                self.server, _thread = start_http_server(port, address, self.registry)
            except OSError as err:
                log.error(
                    "metrics endpoint %s:%d unavailable (%s); running without metrics",
                    address,
                    port,
                    err,
                )
            else:
                host = f"[{address}]" if ":" in address else address
                self.url = f"http://{host}:{port}/metrics"
                log.info("metrics on %s", self.url)

    def on_tick(self, report: TickReport, health: Health) -> None:
        self.tick_duration.observe(report.duration_s)
        for d in report.decisions:
            self._decisions[(str(d.action), str(d.klass))] += 1
            if d.action is not Action.HOLD and report.results.get(d.guest) not in (
                "applied",
                "dry-run",
            ):
                self._failed_actions += 1
        previous = self.snapshot
        counts = Snapshot(
            dry_run=report.dry_run,
            last_tick_t=report.t,
            ticks=health.ticks,
            failed_ticks=health.failed_ticks,
            overruns=health.overruns,
            libvirt_errors=health.hypervisor_errors,
            libvirt_reconnects=health.hypervisor_reconnects,
            decisions=dict(self._decisions),
            failed_actions=self._failed_actions,
        )
        if report.error is not None or report.host is None:
            # A failed tick read nothing: keep the last good picture, update the counters.
            self.snapshot = replace(
                counts,
                host_available_bytes=previous.host_available_bytes,
                host_total_bytes=previous.host_total_bytes,
                psi_some_ratio=previous.psi_some_ratio,
                psi_full_ratio=previous.psi_full_ratio,
                guests=previous.guests,
                counters=previous.counters,
                skipped=previous.skipped,
            )
            return
        h = report.host
        self.snapshot = replace(
            counts,
            host_available_bytes=h.mem_available_kib * BYTES_PER_KIB,
            host_total_bytes=h.mem_total_kib * BYTES_PER_KIB,
            psi_some_ratio=None if h.psi_some_avg10 is None else h.psi_some_avg10 / 100,
            psi_full_ratio=None if h.psi_full_avg10 is None else h.psi_full_avg10 / 100,
            guests=report.guests,
            counters={
                d.guest: {
                    stat: report.samples[d.guest].stats[stat]
                    for stat, *_ in GUEST_COUNTERS
                    if stat in report.samples[d.guest].stats
                }
                for d in report.decisions
            },
            skipped=len(report.skipped),
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
