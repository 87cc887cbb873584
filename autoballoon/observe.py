"""Observe: the host's own memory state and every guest's sample for one tick.

First stage of the pipeline. Reads /proc (under a configurable root, so tests can point it at a
fixture tree) and asks the hypervisor for its guests; turns both into the pure core's
``HostSample`` and ``GuestSample`` values. Guest statistics pass through
``sanitize_guest_stats`` here: what a guest reports is untrusted, and problems are logged once per
guest and kind, not every tick. Which guests are autoballoon's (``GuestScope``, the include/exclude
globs) is decided here too, and handed to the hypervisor with every read, whatever the backend.

The host memory on-demand mode protects may be a memory cgroup instead of the whole host
(``host_memory_cgroup``: e.g. machine.slice, where an operator caps what all guests together may
use). Then the host sample's MemTotal is the cgroup's limit and its MemAvailable what the cgroup
can still take (``autoballoon.hostcgroup``); a cgroup that cannot be read at a tick leaves the
host's own figures, with a warning, never a failed tick.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from pathlib import Path

from autoballoon.core.samples import GuestSample, HostSample, sanitize_guest_stats
from autoballoon.hostcgroup import HostCgroupError, cgroup_host, read_cgroup_memory
from autoballoon.hypervisor import Hypervisor, Reading
from autoballoon.procfs import parse_meminfo, parse_psi
from autoballoon.report import GuestReading

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GuestScope:
    """Which guests autoballoon may read and manage: domain-name globs (fnmatch, case-sensitive).

    Given to the hypervisor at every read, so that no backend touches (reads through QMP, sets a
    statistics period on, resizes) a guest outside it.
    """

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    """Wins over ``include``."""

    def __call__(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.include) and not any(
            fnmatch.fnmatchcase(name, p) for p in self.exclude
        )


def read_host(t: float, proc: Path = Path("/proc")) -> HostSample:
    """Host MemTotal/MemAvailable and memory PSI (absent PSI is fine: None)."""
    info = parse_meminfo((proc / "meminfo").read_text())
    try:
        some, full = parse_psi((proc / "pressure" / "memory").read_text())
    except OSError:
        some = full = None
    return HostSample(
        t=t,
        mem_total_kib=info.get("MemTotal", 0),
        mem_available_kib=info.get("MemAvailable", info.get("MemFree", 0)),
        psi_some_avg10=some,
        psi_full_avg10=full,
    )


@dataclass
class Observation:
    """What the loop observed in one tick: the hypervisor's ``Reading`` made safe for the core.

    Not the same as the reading (raw, untrusted values as the backend returned them) nor as a
    ``trace.RecordedTick`` (only the engine's inputs, as a trace keeps them): besides the host's
    sample, one ``GuestReading`` per guest (its sanitised sample and how its statistics were
    read), in the order read, and which guests were skipped and why.
    """

    host: HostSample
    guests: list[GuestReading]
    skipped: dict[str, str]

    @property
    def samples(self) -> dict[str, GuestSample]:
        """The guests' samples by name, in the order read: the core's input."""
        return {r.sample.name: r.sample for r in self.guests}


@dataclass
class Observer:
    hypervisor: Hypervisor
    proc: Path = Path("/proc")
    scope: GuestScope = GuestScope()
    host_cgroup: Path | None = None
    """A memory cgroup directory: the host memory to protect is this cgroup's
    (``autoballoon.hostcgroup``). None: the whole host."""
    _reported: set[tuple[str, str]] = field(default_factory=set)
    _cgroup_problem: str | None = None

    def read_host(self, t: float) -> HostSample:
        """The host sample, through ``host_cgroup`` when set. A cgroup that cannot be read
        leaves the host's own figures: a warning when that starts, one line when it ends."""
        host = read_host(t, self.proc)
        if self.host_cgroup is None:
            return host
        try:
            cg = read_cgroup_memory(self.host_cgroup)
        except HostCgroupError as err:
            if str(err) != self._cgroup_problem:
                log.warning(
                    "host memory cgroup unreadable, using the whole host's memory instead: %s", err
                )
                self._cgroup_problem = str(err)
            return host
        if self._cgroup_problem is not None:
            log.info("host memory cgroup %s readable again", self.host_cgroup)
            self._cgroup_problem = None
        return cgroup_host(host, cg)

    def observe(self, t: float, wall_now: float | None = None) -> Observation:
        """The host and every guest in scope, read now; ``t`` stamps the samples.

        ``t`` is the core's clock (the daemon's is monotonic). ``wall_now`` is the host's wall
        clock read at the same moment: each guest's statistics age (``stats_age_s``) is measured
        on it, against QEMU's wall-clock ``last_update``. Without it, ``t`` must be wall time.
        Raises TransientError (from the hypervisor) when the host cannot be read at all.
        """
        reading: Reading = self.hypervisor.read(self.scope)
        host = self.read_host(t)
        guests: list[GuestReading] = []
        for g in reading.guests:
            stats, problems = sanitize_guest_stats(g.stats)
            for problem in problems:
                key = (g.name, problem.split(":", 1)[0])
                if key not in self._reported:
                    self._reported.add(key)
                    log.warning("guest %s reports garbage, ignored: %s", g.name, problem)
            last_update = max(g.last_update, 0)
            sample = GuestSample(
                name=g.name,
                uuid=g.uuid,
                t=t,
                actual_kib=max(g.actual_kib, 0),
                max_kib=max(g.max_kib, 0),
                last_update=last_update,
                stats=stats,
                stats_period_s=g.stats_period_s,
                rss_kib=g.rss_kib,
                stats_age_s=None if wall_now is None else wall_now - last_update,
                autodeflate=g.autodeflate,
                free_page_reporting=g.free_page_reporting,
                tags=g.tags,
            )
            guests.append(GuestReading(sample, g.source))
        return Observation(host, guests, dict(reading.skipped))
