"""Prometheus metrics: the daemon's state for scraping, on a read-only HTTP endpoint.

Sits after act, beside the other sinks. ``MetricsSink`` keeps one immutable snapshot of the last
tick and a private ``CollectorRegistry`` (never the global one, so tests and tools can run
several); the collector turns the snapshot into metric families when scraped. The endpoint
answers GET only; there is nothing in it that can change state.

A scrape shows only what is true now. A failed tick read nothing, so the host's and the guests'
gauges are absent until the next good tick (``autoballoon_libvirt_connected`` says why), rather
than repeating the last good values as if they were current. A guest is shown only while it is
controlled; what the guest itself reports (available memory, its counters) only while the
controller could use its statistics (``basis`` other than ``none``: not stale, not missing). A
guest that went away disappears by itself. ``autoballoon_up`` is 1 whenever the endpoint
answers, so "daemon down" is Prometheus' own ``up == 0`` or ``absent(autoballoon_up)``.

Series per guest carry the label ``domain`` (libvirt's domain name, as libvirt exporters name
it); ``autoballoon_guest_info`` joins it to the domain's ``uuid``. The pressure class is one
series per guest, ``autoballoon_guest_pressure_class{class=...} 1`` for the current class only.

Units follow Prometheus: bytes and seconds; counters end in ``_total``. The guests' own
cumulative counters are exposed as counters (they restart at a guest reboot, which ``rate()``
handles), so any window can be chosen in PromQL.
"""

from __future__ import annotations

import logging
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
from autoballoon.config import metrics_url
from autoballoon.core.classify import Basis
from autoballoon.core.decide import Action
from autoballoon.core.samples import (
    RATE_STATS,
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
from autoballoon.report import GuestRecord, Health, TickReport, reclaimed_kib

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer


log = logging.getLogger("autoballoon")

PREFIX = "autoballoon"

TICK_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""A healthy tick takes milliseconds; busy guest monitors hold one for a read budget (2 s) and
each resize's, which the top buckets still resolve. An unreachable libvirt fails a tick at once."""

_SCANNED = "Memory scanned by reclaim inside the guest (6.12 counter); kswapd is async."
_RECLAIMED = "Memory reclaimed inside the guest (6.12 counter); kswapd is async."
_EXPORTED: Mapping[str, tuple[str, str, Mapping[str, str]]] = {
    STAT_OOM_KILLS: ("guest_oom_kills", "OOM kills inside the guest (6.12 counter).", {}),
    STAT_ALLOC_STALLS: (
        "guest_alloc_stalls",
        "Allocation stalls inside the guest (6.12 counter).",
        {},
    ),
    STAT_ASYNC_SCANS: ("guest_scanned_bytes", _SCANNED, {"reclaim": "async"}),
    STAT_DIRECT_SCANS: ("guest_scanned_bytes", _SCANNED, {"reclaim": "direct"}),
    STAT_ASYNC_RECLAIMS: ("guest_reclaimed_bytes", _RECLAIMED, {"reclaim": "async"}),
    STAT_DIRECT_RECLAIMS: ("guest_reclaimed_bytes", _RECLAIMED, {"reclaim": "direct"}),
    STAT_SWAP_IN: ("guest_swap_in_bytes", "Memory swapped in by the guest.", {}),
    STAT_SWAP_OUT: ("guest_swap_out_bytes", "Memory swapped out by the guest.", {}),
    STAT_MAJOR_FAULTS: ("guest_major_faults", "Major page faults in the guest.", {}),
}
GUEST_COUNTERS: tuple[tuple[str, str, str, Mapping[str, str]], ...] = tuple(
    (stat, *_EXPORTED[stat]) for stat in RATE_STATS
)
"""The guest's cumulative counters, in ``core.samples.RATE_STATS``'s order: (stat, metric name,
help, extra labels). A counter added there and not here fails at import."""


RESIZES = (Action.INFLATE, Action.DEFLATE)
"""The changes counted per guest (``autoballoon_guest_resizes_total{action}``); holds are not."""


@dataclass(frozen=True)
class GuestTally:
    """The daemon's own per-guest counters, kept across ticks while the guest is seen."""

    resizes: Mapping[Action, int] = field(default_factory=dict)
    failures: int = 0


@dataclass(frozen=True)
class Snapshot:
    """Everything a scrape shows, taken at the end of a tick (replaced whole, never mutated).

    ``connected`` is None before the first tick, False after a failed one: then the host and
    guest fields are empty, since nothing was read.
    """

    dry_run: bool = False
    connected: bool | None = None
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
    """The last good tick's rows; a row's counters (``GUEST_COUNTERS``) are its sample's."""
    tallies: Mapping[str, GuestTally] = field(default_factory=dict)
    skipped: int | None = None


class _SnapshotCollector(Collector):
    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink

    def collect(self) -> Iterable[Metric]:
        s = self.sink.snapshot  # one read: a scrape sees one tick, never a mix of two

        def gauge(name: str, doc: str, value: float | None) -> Iterable[Metric]:
            if value is not None:
                yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        def counter(name: str, doc: str, value: int | None) -> Iterable[Metric]:
            if value is not None:
                yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        yield from gauge("up", "1 while the daemon runs (the endpoint answers only then).", 1)
        build = InfoMetricFamily(f"{PREFIX}_build", "The daemon's version.")
        build.add_metric([], {"version": __version__})
        yield build
        yield from gauge(
            "dry_run", "1 when the daemon only decides and logs (run --dry-run).", int(s.dry_run)
        )
        yield from gauge(
            "libvirt_connected",
            "1 when the last tick read libvirt and the host, 0 when it failed (absent before the "
            "first tick).",
            None if s.connected is None else int(s.connected),
        )
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
        yield from gauge(
            "last_tick_timestamp_seconds",
            "When the last tick (good or failed) started, Unix time.",
            s.last_tick_t,
        )
        yield from gauge(
            "host_memory_available_bytes",
            "The host's MemAvailable at the last tick (absent after a failed tick).",
            s.host_available_bytes,
        )
        yield from gauge("host_memory_total_bytes", "The host's MemTotal.", s.host_total_bytes)
        for kind, value in (("some", s.psi_some_ratio), ("full", s.psi_full_ratio)):
            yield from gauge(
                f"host_memory_pressure_{kind}_avg10_ratio",
                f"The host's memory PSI '{kind}' avg10 (share of time stalled, 0 to 1).",
                value,
            )
        if s.connected:
            yield from gauge(
                "reclaimed_memory_bytes",
                "Memory held back from controlled guests: sum over them of balloon maximum "
                "minus current size.",
                reclaimed_kib(s.guests) * BYTES_PER_KIB,
            )
            guests = GaugeMetricFamily(
                f"{PREFIX}_guests",
                "Guests seen at the last tick, controlled or not (and why not in the logs).",
                labels=["state"],
            )
            guests.add_metric(["controlled"], len(s.guests))
            guests.add_metric(["skipped"], s.skipped or 0)
            yield guests
        yield from _guest_metrics(s.guests, s.tallies)


def _guest_metrics(
    guests: Iterable[GuestRecord],
    tallies: Mapping[str, GuestTally],
) -> Iterable[Metric]:
    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["domain", *labels])

    info = gauge(
        "guest_info", "1 per controlled guest; joins the domain name to its UUID.", ("uuid",)
    )
    size = gauge("guest_balloon_bytes", "The guest's current balloon size (memory it has).")
    target = gauge(
        "guest_balloon_target_bytes",
        "The size decided at the last tick (equal to the current size when holding).",
    )
    top = gauge("guest_balloon_max_bytes", "The guest's maximum memory (the balloon's ceiling).")
    floor = gauge("guest_balloon_floor_bytes", "The policy's floor: never inflated below this.")
    available = gauge(
        "guest_available_bytes",
        "Memory available inside the guest, from its own report (absent while its statistics "
        "are stale or missing).",
    )
    klass = gauge(
        "guest_pressure_class",
        "1, labelled with the guest's current pressure class (one series per guest; unknown "
        "while its statistics are stale or missing).",
        ("class",),
    )
    extended = gauge(
        "guest_extended_stats",
        "1 when the guest reports the Linux 6.12 pressure counters, 0 when it is classified "
        "from the standard balloon statistics only.",
    )
    resizes = CounterMetricFamily(
        f"{PREFIX}_guest_resizes",
        "Balloon changes made by the daemon (in dry-run: that it would have made), by action.",
        labels=["domain", "action"],
    )
    failures = CounterMetricFamily(
        f"{PREFIX}_guest_resize_failures",
        "Balloon changes the daemon decided but libvirt refused.",
        labels=["domain"],
    )
    counters: dict[str, CounterMetricFamily] = {}
    for g in sorted(guests, key=lambda g: g.name):
        name = g.name
        info.add_metric([name, g.uuid], 1)
        size.add_metric([name], g.actual_kib * BYTES_PER_KIB)
        target.add_metric([name], g.decision.target_kib * BYTES_PER_KIB)
        top.add_metric([name], g.max_kib * BYTES_PER_KIB)
        floor.add_metric([name], g.floor_kib * BYTES_PER_KIB)
        klass.add_metric([name, str(g.klass)], 1)
        tally = tallies.get(name, GuestTally())
        for action in RESIZES:
            resizes.add_metric([name, str(action)], tally.resizes.get(action, 0))
        failures.add_metric([name], tally.failures)
        if g.basis is Basis.NONE:
            continue  # statistics stale or missing: nothing the guest said is current
        if g.available_kib is not None:
            available.add_metric([name], g.available_kib * BYTES_PER_KIB)
        extended.add_metric([name], 1.0 if g.stats == "extended" else 0.0)
        own = g.sample.stats
        for stat, metric, doc, extra in GUEST_COUNTERS:
            if stat not in own:
                continue
            family = counters.get(metric)
            if family is None:
                family = counters[metric] = CounterMetricFamily(
                    f"{PREFIX}_{metric}", doc, labels=["domain", *extra]
                )
            family.add_metric([name, *extra.values()], own[stat])
    yield from (info, size, target, top, floor, available, klass, extended, resizes, failures)
    yield from counters.values()


def _tallies(previous: Mapping[str, GuestTally], report: TickReport) -> dict[str, GuestTally]:
    """This tick's changes added to the per-guest counters; guests no longer seen are dropped
    (a guest that comes back starts from 0, which ``rate()`` reads as a counter reset)."""
    seen = {g.name for g in report.guests} | set(report.skipped)
    out = {name: t for name, t in previous.items() if name in seen}
    for g in report.guests:
        d = g.decision
        if d.action not in RESIZES:
            continue
        t = out.get(g.name, GuestTally())
        if d.failed:  # refused: libvirt's error is the result
            out[g.name] = GuestTally(t.resizes, t.failures + 1)
        else:
            resizes = {**t.resizes, d.action: t.resizes.get(d.action, 0) + 1}
            out[g.name] = GuestTally(resizes, t.failures)
    return out


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
                self.url = metrics_url(address, port)
                log.info("metrics on %s", self.url)

    def on_tick(self, report: TickReport, health: Health) -> None:
        self.tick_duration.observe(report.duration_s)
        previous = self.snapshot
        loop = Snapshot(
            dry_run=report.dry_run,
            last_tick_t=report.t,
            ticks=health.ticks,
            failed_ticks=health.failed_ticks,
            overruns=health.overruns,
            libvirt_errors=health.hypervisor_errors,
            libvirt_reconnects=health.hypervisor_reconnects,
        )
        h = report.host
        if report.error is not None or h is None:
            # A failed tick read nothing: no host or guest figure is current. The per-guest
            # counters of our own are kept for the guests' return.
            self.snapshot = replace(loop, connected=False, tallies=previous.tallies)
            return
        self.snapshot = replace(
            loop,
            connected=True,
            host_available_bytes=h.mem_available_kib * BYTES_PER_KIB,
            host_total_bytes=h.mem_total_kib * BYTES_PER_KIB,
            psi_some_ratio=None if h.psi_some_avg10 is None else h.psi_some_avg10 / 100,
            psi_full_ratio=None if h.psi_full_avg10 is None else h.psi_full_avg10 / 100,
            guests=report.guests,
            tallies=_tallies(previous.tallies, report),
            skipped=len(report.skipped),
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
