"""``LibvirtHypervisor``: the ``autoballoon.hypervisor.Hypervisor`` protocol over libvirt.

A thin facade: the connection (``connection.Connection``) and the reads (``reader.Reader``) do
the work; setting a balloon is here. Every libvirt error is mapped once into the taxonomy of
``autoballoon.hypervisor`` (``errors.map_error``, ``Connection.map``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Generic, TypeVar

import libvirt

from autoballoon.backends.libvirt.connection import Connection, Settings
from autoballoon.backends.libvirt.reader import Reader, instance
from autoballoon.hypervisor import GuestError, PermanentError, RawGuest, Reading

T = TypeVar("T")


class _Setting(Generic[T]):
    """An attribute of the facade that is one field of its ``Settings``: a change (a test's,
    the lab's) is seen by the connection and the reader at their next call."""

    def __set_name__(self, _owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: LibvirtHypervisor, _owner: type) -> T:
        value: T = getattr(obj.settings, self.name)
        return value

    def __set__(self, obj: LibvirtHypervisor, value: T) -> None:
        setattr(obj.settings, self.name, value)


def _job_running(dom: Any) -> bool:
    try:
        job = dom.jobInfo()[0]
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return False  # drivers without jobs (the test driver) cannot be migrating
        raise
    return job not in (libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED)


def _resize(dom: Any, kib: int) -> None:
    # A running domain being migrated (or under another job) keeps state "running": ask for
    # its job only now, when about to act, not for every guest every tick.
    if _job_running(dom):
        raise GuestError("a job (migration, save, dump) is running; not resized now")
    dom.setMemoryFlags(kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)


class LibvirtHypervisor:
    """``autoballoon.hypervisor.Hypervisor`` over a libvirt connection."""

    uri = _Setting[str]()
    extended_stats = _Setting[str]()
    stats_period_s = _Setting[int]()
    dry_run = _Setting[bool]()
    xml_refresh_s = _Setting[float]()
    read_budget_s = _Setting[float]()
    read_workers = _Setting[int]()

    def __init__(
        self,
        uri: str = "qemu:///system",
        *,
        extended_stats: str = "qmp",
        stats_period_s: int = 1,
        dry_run: bool = False,
        xml_refresh_s: float = 30.0,
        read_budget_s: float = 2.0,
        read_workers: int = 8,
    ) -> None:
        """``dry_run``: call no setter at all (no balloon target, no statistics period).

        ``xml_refresh_s``: how often a running guest's live XML is read again, to follow a stats
        period someone else changes (``virsh dommemstat --period``); no event tells.

        ``read_budget_s``: how long one read waits for the guests' balloons (``read_workers`` of
        them read at once). A guest not read by then is left out of this tick (busy) and is read
        again once its pending call returns; a setter that gets no answer in that time is
        reported as failed. A read never waits for libvirt to come back: reconnection runs in
        the background, with backoff, between ticks.
        """
        self.settings = Settings(
            uri=uri,
            extended_stats=extended_stats,
            stats_period_s=stats_period_s,
            dry_run=dry_run,
            xml_refresh_s=xml_refresh_s,
            read_budget_s=read_budget_s,
            read_workers=read_workers,
        )
        self.connection = Connection(self.settings)
        self.reader = Reader(self.settings, self.connection)

    @property
    def reconnects(self) -> int:
        """Connections reopened after a loss (``Controller.health()``)."""
        return self.connection.reconnects

    @property
    def errors(self) -> int:
        """Guest errors so far (``Controller.health()``)."""
        return self.connection.errors

    def connect(self) -> None:
        """Open the connection now (at start): ``Connection.connect``."""
        self.connection.connect()

    def read(self, wanted: Callable[[str], bool]) -> Reading:
        return self.reader.read(wanted)

    def balloons(self) -> list[RawGuest]:
        """Every running guest's balloon size and maximum only: ``Reader.balloons``."""
        return self.reader.balloons()

    def set_balloon_kib(self, name: str, kib: int) -> None:
        if self.dry_run:
            raise PermanentError(f"dry-run: guest {name}'s balloon is not changed")
        dom = self.reader.domains.get(name)
        budget_s = self.read_budget_s
        try:
            if dom is None:
                dom = self.connection.live().lookupByName(name)
            if self.reader.still_busy(instance(dom)) is not None:
                raise GuestError("busy: its QEMU monitor has not answered an earlier read yet")
            # In a worker, like the reads: a guest that stopped answering since it was read
            # costs this tick the budget, not the resizing of the guests after it.
            pool = ThreadPoolExecutor(1, thread_name_prefix="libvirt-set")
            done = pool.submit(_resize, dom, int(kib))
            pool.shutdown(wait=False)
            try:
                done.result(timeout=budget_s)
            except FutureTimeout:
                raise GuestError(
                    f"no answer within {budget_s:g} s (its QEMU monitor is busy?); "
                    "the new size may still be applied"
                ) from None
        except libvirt.libvirtError as err:
            raise self.connection.map(err) from err

    def close(self) -> None:
        """Drop the connection and stop reconnecting; a later read connects afresh."""
        self.connection.close()
