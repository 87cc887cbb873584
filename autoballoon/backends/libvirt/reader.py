"""Reading the guests: time-budgeted reads, the busy map, and the cache of what each running
instance's live XML says.

Nothing in a read waits long on one guest: domain states are listed without touching any QEMU
monitor, each guest's balloon is read in a worker within a time budget
(``Settings.read_budget_s``), and libvirt is asked not to wait for a guest's job
(``VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT``). A guest whose read outlives the budget is *busy*:
left out of the tick, and not asked again until its pending call returns.

The 6.12 counters (stat-oom-kills ... stat-direct-reclaims) are not exposed by any libvirt API;
the only route is QEMU's ``qom-get <balloon>/guest-stats`` through ``qemuMonitorCommand``. That
marks the domain "tainted: custom-monitor" in libvirt's logs (once per domain). It is on by
default (``extended_stats = "qmp"``) and can be switched off (``"off"``), in which case only the
standard balloon statistics are used. A guest whose QEMU refuses the QMP read (not supported)
falls back to the standard statistics; one whose monitor fails is not controlled that tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass
from typing import Any

import libvirt
import libvirt_qemu

from autoballoon.backends.libvirt.connection import Connection, Settings
from autoballoon.backends.libvirt.errors import map_error
from autoballoon.core.samples import NO_TAGS, DomainTags
from autoballoon.hypervisor import DomainGone, PermanentError, RawGuest, Reading, TransientError
from autoballoon.qmp import (
    guest_stats_command,
    parse_balloon,
    parse_guest_stats_reply,
    stats_from_libvirt_fields,
    tags_from_xml,
)

# The logger name the JSON log lines have always carried ("logger"), kept for log filters.
log = logging.getLogger("autoballoon.libvirt_adapter")

Instance = tuple[str, int]
"""One running instance of a domain: (UUID, ID); see ``instance``."""

_STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


@dataclass
class DomainInfo:
    """What is learnt once per running instance of a domain (``instance``) from its live XML."""

    balloon_path: str | None
    """QOM path of the balloon device; "" when it has no alias; None when there is none."""
    stats_period_s: int | None
    """The guest's statistics period, None while it has none."""
    period_tried: bool = False
    """Setting a period was tried (live) or said to be skipped (dry-run): never twice."""
    tainted_logged: bool = False
    xml_read_at: float = 0.0
    """time.monotonic() of the last read of the live XML."""
    autodeflate: bool = False
    """The balloon has deflate-on-OOM (``<memballoon autodeflate='on'>``)."""
    free_page_reporting: bool = False
    """The balloon reports freed pages (``<memballoon freePageReporting='on'>``)."""
    tags: DomainTags = NO_TAGS
    """The domain's ``<metadata>`` about its policy (``qmp.tags_from_xml``)."""


def instance(dom: Any) -> Instance:
    """What tells one running instance of a domain from the next: a restart changes the ID.

    Both are known client-side (no call to the daemon). Keyed so, the cache stays right when
    lifecycle events were missed (a reconnect, a daemon restart).
    """
    return dom.UUIDString(), int(dom.ID())


def _not_running(fields: dict[str, Any]) -> str | None:
    """Why a listed domain is not controlled now (paused, migrating...), or None if running."""
    state = fields.get("state.state", libvirt.VIR_DOMAIN_RUNNING)
    if state == libvirt.VIR_DOMAIN_RUNNING:
        return None
    if state == libvirt.VIR_DOMAIN_PAUSED and fields.get("state.reason") == (
        libvirt.VIR_DOMAIN_PAUSED_MIGRATION
    ):
        return "migrating"
    return _STATE_NAMES.get(state, f"state {state}")


def _fields_from_memory_stats(dom: Any) -> dict[str, Any]:
    """Per-domain fallback for drivers whose bulk stats lack balloon.* (e.g. the test driver)."""
    stats = dom.memoryStats()
    fields: dict[str, Any] = {
        f"balloon.{key}": value for key, value in stats.items() if key != "last_update"
    }
    if "actual" in stats:
        fields["balloon.current"] = stats["actual"]
        fields["balloon.maximum"] = dom.maxMemory()
    if "last_update" in stats:
        fields["balloon.last-update"] = stats["last_update"]
    return fields


def _describe(tags: DomainTags) -> str:
    if not tags:
        return "none"
    parts = [f"policy {tags.policy}"] if tags.policy else []
    parts += [f"Nova flavor {tags.flavor}"] if tags.flavor else []
    parts += [f"{k}={v}" for k, v in tags.overrides]
    return ", ".join(parts)


class Reader:
    """The guests of ``connection``, read within the budget; keeps the busy map and the cache.

    ``info``: per running instance, the facts of its live XML (``DomainInfo``), forgotten when
    the instance stops (lifecycle event, or absent from a listing). ``busy``: per running
    instance, the read that outlived its tick's budget. ``domains``: the last read's domains by
    name, for the setter (cleared with the connection).
    """

    def __init__(self, settings: Settings, connection: Connection) -> None:
        self.settings = settings
        self.connection = connection
        self.info: dict[Instance, DomainInfo] = {}
        self.busy: dict[Instance, Future[RawGuest | str]] = {}
        self.domains: dict[str, Any] = {}
        connection.on_stopped = self._forget
        connection.on_dropped = self.domains.clear

    def _forget(self, dom: Any) -> None:
        self.info.pop(instance(dom), None)

    def balloons(self) -> list[RawGuest]:
        """Every running guest's balloon size and maximum, and nothing else: no statistics, no
        QMP, no statistics period set (for `release` and `check-policy --uri`, which must not
        touch a guest they only look at). ``stats`` is empty."""
        conn = self.connection.live()
        try:
            doms = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except libvirt.libvirtError as err:
            raise self.connection.map(err) from err
        guests = []
        for dom in doms:
            try:
                _state, max_kib, actual_kib, *_ = dom.info()
                tags = tags_from_xml(dom.XMLDesc(0))
                guests.append(
                    RawGuest(
                        dom.name(),
                        dom.UUIDString(),
                        actual_kib,
                        max_kib,
                        0,
                        {},
                        "libvirt",
                        tags=tags,
                    )
                )
            except libvirt.libvirtError as err:
                if not isinstance(self.connection.map(err), DomainGone):
                    raise self.connection.map(err) from err
        return guests

    def read(self, wanted: Callable[[str], bool]) -> Reading:
        """Every running guest ``wanted`` accepts, read within ``read_budget_s``.

        The listing asks for domain states only, which never waits on a guest's QEMU monitor;
        each guest's balloon is then read in a worker, so one guest whose monitor does not
        answer costs this tick the budget, not the other guests' readings.
        """
        self.connection.wanted = wanted
        conn = self.connection.live()
        try:
            records = conn.getAllDomainStats(
                libvirt.VIR_DOMAIN_STATS_STATE, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
            )
        except libvirt.libvirtError as err:
            raise self.connection.map(err) from err
        budget_s = self.settings.read_budget_s
        reading = Reading()
        self.domains.clear()
        started: dict[str, tuple[Instance, Future[RawGuest | str]]] = {}
        pool = ThreadPoolExecutor(self.settings.read_workers, thread_name_prefix="libvirt-read")
        try:
            for dom, fields in records:
                name = dom.name()
                if not wanted(name):
                    continue
                self.domains[name] = dom
                key = instance(dom)
                why = _not_running(fields) or self.still_busy(key)
                if why is not None:
                    reading.skipped[name] = why
                    continue
                started[name] = (key, pool.submit(self._read_guest, conn, dom, name))
        finally:
            pool.shutdown(wait=False)
        wait_for_futures([f for _key, f in started.values()], timeout=budget_s)
        for name, (key, future) in started.items():
            if future.cancel():  # never started: the budget ran out while it was queued
                reading.skipped[name] = "not read: the tick's read budget ran out first"
                continue
            if not future.done():
                self.busy[key] = future
                reading.skipped[name] = (
                    f"busy: its QEMU monitor did not answer within {budget_s:g} s; "
                    "read again once it does"
                )
                continue
            try:
                outcome = future.result()
            except libvirt.libvirtError as err:
                mapped = self.connection.map(err)
                if isinstance(mapped, TransientError):
                    raise mapped from err
                if not isinstance(mapped, DomainGone):
                    reading.skipped[name] = f"error: {mapped}"
                continue
            if isinstance(outcome, str):
                reading.skipped[name] = outcome
            else:
                reading.guests.append(outcome)
        running = {instance(dom) for dom, _fields in records}
        for gone in set(self.info) - running:  # stopped while its event was missed
            del self.info[gone]
        for gone in set(self.busy) - running:
            del self.busy[gone]
        return reading

    def still_busy(self, key: Instance) -> str | None:
        """Why a guest whose previous read has not returned yet is not asked again."""
        future = self.busy.get(key)
        if future is None:
            return None
        if not future.done():
            return "busy: its QEMU monitor has not answered an earlier read yet"
        del self.busy[key]  # answered late: its result is old, read it afresh
        return None

    def _read_guest(self, conn: Any, dom: Any, name: str) -> RawGuest | str:
        """One running guest's balloon (in a worker): the guest, or why it is not controlled."""
        uuid = dom.UUIDString()
        info = self._domain_info(dom)
        if info.balloon_path is None:
            return "no virtio balloon device"
        # NOWAIT: if another call holds this guest's libvirt job (another client's query, a
        # migration, a hung monitor), libvirt answers at once with the sizes only. Then wait for
        # the job after all: this is a worker, the tick waits no longer than its budget.
        balloon = libvirt.VIR_DOMAIN_STATS_BALLOON
        nowait = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
        ((_dom, fields),) = conn.domainListGetStats([dom], balloon, nowait)
        if "balloon.current" in fields and "balloon.rss" not in fields:
            ((_dom, fields),) = conn.domainListGetStats([dom], balloon, 0)
        if "balloon.current" not in fields:
            fields = fields | _fields_from_memory_stats(dom)
        if "balloon.current" not in fields or "balloon.maximum" not in fields:
            return "balloon reports no size"
        actual = int(fields["balloon.current"])
        maximum = int(fields["balloon.maximum"])
        rss = fields.get("balloon.rss")
        rss_kib = int(rss) if rss is not None else None
        if info.stats_period_s is None and not self._give_stats_period(dom, name, info):
            # No period, none set: whatever QEMU holds is no statistics. Reported as such, so
            # the guest is classified unknown and never squeezed on numbers it did not send.
            return RawGuest(
                name,
                uuid,
                actual,
                maximum,
                0,
                {},
                "libvirt",
                rss_kib,
                autodeflate=info.autodeflate,
                free_page_reporting=info.free_page_reporting,
                tags=info.tags,
            )
        if rss is None:  # libvirt read no statistics even with the job
            return "libvirt reads no balloon statistics for it"
        qmp = None
        if self.settings.extended_stats == "qmp" and info.balloon_path:  # "" (no alias): no QMP
            qmp = self._qmp_guest_stats(dom, name, info.balloon_path, info)
        source = "libvirt" if qmp is None else "qmp"
        last_update, stats = qmp or (
            int(fields.get("balloon.last-update", 0)),
            stats_from_libvirt_fields(fields),
        )
        return RawGuest(
            name,
            uuid,
            actual,
            maximum,
            last_update,
            stats,
            source,
            rss_kib,
            info.stats_period_s,
            info.autodeflate,
            info.free_page_reporting,
            info.tags,
        )

    def _domain_info(self, dom: Any) -> DomainInfo:
        """The cached facts of this running instance, from its live XML (re-read now and then:
        the stats period can be changed by someone else, and no event says so). A restart is a
        new instance, read afresh: that is when a redefined balloon device takes effect."""
        key = instance(dom)
        info = self.info.get(key)
        now = time.monotonic()
        if info is not None and now - info.xml_read_at < self.settings.xml_refresh_s:
            return info
        xml = dom.XMLDesc(0)
        balloon = parse_balloon(xml)
        path = balloon.qom_path if balloon is not None else None
        period = balloon.stats_period_s if balloon is not None else None
        autodeflate = balloon is not None and balloon.autodeflate
        reporting = balloon is not None and balloon.free_page_reporting
        if info is None:
            info = self.info[key] = DomainInfo(path, period or None)
            if autodeflate or reporting:
                log.info(
                    "guest %s: balloon with deflate-on-OOM %s, free page reporting %s",
                    dom.name(),
                    "on" if autodeflate else "off",
                    "on" if reporting else "off",
                )
        elif period and period != info.stats_period_s:
            log.info("guest %s: statistics period is now %d s", dom.name(), period)
            info.stats_period_s = period
        info.autodeflate, info.free_page_reporting = autodeflate, reporting
        tags = tags_from_xml(xml)
        if tags != info.tags:
            log.info("guest %s: policy metadata %s", dom.name(), _describe(tags))
            info.tags = tags
        info.xml_read_at = now
        return info

    def _give_stats_period(self, dom: Any, name: str, info: DomainInfo) -> bool:
        """Set the configured statistics period on a guest that has none (never in dry-run).

        True when the guest now has one. Tried once per running instance, said once.
        """
        if info.period_tried:
            return False
        info.period_tried = True
        if self.settings.dry_run:
            log.warning(
                "guest %s has no balloon statistics period and a dry run sets none: it reads as "
                "unknown until one is set: virsh dommemstat --period 10 --live %s (a live "
                "daemon sets stats_period_s itself)",
                name,
                name,
            )
            return False
        period_s = self.settings.stats_period_s
        try:
            dom.setMemoryStatsPeriod(period_s, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as err:
            log.warning("guest %s: cannot set the statistics period: %s", name, err)
            return False
        log.info("guest %s: statistics period set to %d s", name, period_s)
        info.stats_period_s = period_s
        return True

    def _qmp_guest_stats(
        self, dom: Any, name: str, balloon_path: str, info: DomainInfo
    ) -> tuple[int, dict[str, object]] | None:
        try:
            reply = libvirt_qemu.qemuMonitorCommand(dom, guest_stats_command(balloon_path), 0)
        except libvirt.libvirtError as err:
            mapped = map_error(err)
            if not isinstance(mapped, PermanentError):
                raise  # this guest's monitor, its end or the connection: not for a fallback
            log.debug("guest %s: QMP guest-stats failed (%s); standard stats", name, mapped)
            return None
        parsed = parse_guest_stats_reply(reply)
        if parsed is None:
            return None
        if not info.tainted_logged:
            log.info(
                "guest %s: reading the 6.12 counters via QMP (libvirt logs it as "
                "'tainted: custom-monitor'; set extended_stats = \"off\" to avoid; "
                "`autoballoon check-policy --uri` says why and what it costs)",
                name,
            )
            info.tainted_logged = True
        return parsed
