"""Samples: what the host and each guest reported at one tick, sanitised.

Sits at the start of the pure core. The observer (live) and the trace reader (replay) both build
these values; everything downstream trusts them. Guest-reported statistics are untrusted input (a
guest controls them), so ``sanitize_guest_stats`` is the single gate they pass through: unknown
names, non-integers, negative numbers, QEMU's "not reported" marker (u64 -1) and absurd values
are dropped here, never turned into numbers further on. ``size_problem`` is the same gate for the
balloon sizes: a guest whose maximum or size makes no sense is left alone by decide().

Units follow QEMU's ``guest-stats``: memory amounts and scan/reclaim amounts are bytes, counts
(oom-kills, alloc-stalls, major/minor faults) are plain counts. The balloon sizes use libvirt's KiB.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

U64_ABSENT = 2**64 - 1
"""What QEMU reports for a statistic the guest never sent (an older kernel for tags 10-15)."""

MAX_SANE_VALUE = 2**62
"""Larger than any real counter or memory size (4 EiB); anything above is treated as garbage."""

MAX_GUEST_KIB = 16 << 30
"""The largest guest size that makes sense (16 TiB); policies are checked up to it too."""

# QEMU's guest-stats names (hw/virtio/virtio-balloon.c), in virtio tag order.
STAT_SWAP_IN = "stat-swap-in"
STAT_SWAP_OUT = "stat-swap-out"
STAT_MAJOR_FAULTS = "stat-major-faults"
STAT_MINOR_FAULTS = "stat-minor-faults"
STAT_FREE_MEMORY = "stat-free-memory"
STAT_TOTAL_MEMORY = "stat-total-memory"
STAT_AVAILABLE_MEMORY = "stat-available-memory"
STAT_DISK_CACHES = "stat-disk-caches"
STAT_HTLB_PGALLOC = "stat-htlb-pgalloc"
STAT_HTLB_PGFAIL = "stat-htlb-pgfail"
STAT_OOM_KILLS = "stat-oom-kills"
STAT_ALLOC_STALLS = "stat-alloc-stalls"
STAT_ASYNC_SCANS = "stat-async-scans"
STAT_DIRECT_SCANS = "stat-direct-scans"
STAT_ASYNC_RECLAIMS = "stat-async-reclaims"
STAT_DIRECT_RECLAIMS = "stat-direct-reclaims"

STANDARD_STATS = (
    STAT_SWAP_IN,
    STAT_SWAP_OUT,
    STAT_MAJOR_FAULTS,
    STAT_MINOR_FAULTS,
    STAT_FREE_MEMORY,
    STAT_TOTAL_MEMORY,
    STAT_AVAILABLE_MEMORY,
    STAT_DISK_CACHES,
    STAT_HTLB_PGALLOC,
    STAT_HTLB_PGFAIL,
)
EXTENDED_STATS = (
    STAT_OOM_KILLS,
    STAT_ALLOC_STALLS,
    STAT_ASYNC_SCANS,
    STAT_DIRECT_SCANS,
    STAT_ASYNC_RECLAIMS,
    STAT_DIRECT_RECLAIMS,
)
"""The six counters Linux 6.12 added (virtio tags 10-15); all cumulative since guest boot."""

RATE_STATS = (*EXTENDED_STATS, STAT_SWAP_IN, STAT_SWAP_OUT, STAT_MAJOR_FAULTS)
"""The cumulative counters the controller reads as rates (``core.rates``) and the metrics export
as the guest's own counters: the six 6.12 ones, swap in and out, major faults."""

KNOWN_STATS = frozenset(STANDARD_STATS + EXTENDED_STATS)
_EXTENDED_SET = frozenset(EXTENDED_STATS)

CUMULATIVE_STATS = frozenset(
    (STAT_SWAP_IN, STAT_SWAP_OUT, STAT_MAJOR_FAULTS, STAT_MINOR_FAULTS, *EXTENDED_STATS)
)
"""Counters that only grow while the guest runs; a drop means the guest rebooted."""


@dataclass(frozen=True, slots=True)
class HostSample:
    """The host's own memory state at one tick."""

    t: float
    mem_total_kib: int
    mem_available_kib: int
    psi_some_avg10: float | None = None
    psi_full_avg10: float | None = None


@dataclass(frozen=True, slots=True)
class DomainTags:
    """What a domain's own libvirt ``<metadata>`` says about its sizing (read by the backend).

    ``policy`` names a per-VM policy file (its name without ``.toml``) and ``overrides`` sets
    policy fields for this domain alone (``floor_mib="512"``, ``priority="80"``: text, as in
    the XML; the policy model validates them), both from an ``<autoballoon:policy>`` element;
    ``flavor`` is the OpenStack Nova flavor the domain was built from (``<nova:flavor
    name=...>``), which policy files can match.
    """

    policy: str = ""
    flavor: str = ""
    overrides: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.policy or self.flavor or self.overrides)


NO_TAGS = DomainTags()


@dataclass(frozen=True, slots=True)
class GuestSample:
    """One guest's balloon state and sanitised statistics at one tick.

    Two clocks, kept apart. ``t`` is the time of the reading on a clock that never goes back
    (the daemon: a monotonic clock, seconds); ``step``'s ``now`` is on the same clock, and every
    order, rate and timer in the core uses only these two. ``last_update`` is QEMU's timestamp
    (the host's wall clock, epoch seconds) of the guest's latest statistics report, 0 before the
    first; the core compares it only with wall-clock times derived by ``wall_time``, so a step
    of the wall clock moves nothing but what it must. ``stats_age_s`` is how old that report
    was when read, by the reader's wall clock: with it, ``t`` may be any monotonic clock.
    Without it (None, as in traces recorded so far), ``t`` is taken to be wall time itself.
    """

    name: str
    uuid: str
    t: float
    actual_kib: int
    max_kib: int
    last_update: int
    stats: Mapping[str, int] = field(default_factory=dict)
    stats_period_s: float | None = None
    """How often the guest reports its statistics (the live domain's balloon stats period);
    None when the observer does not know it."""
    rss_kib: int | None = None
    """The host's view: resident memory of the guest's QEMU process (libvirt's balloon.rss);
    None when not reported."""
    stats_age_s: float | None = None
    """Wall-clock seconds between QEMU's ``last_update`` and this reading; None when the
    reader does not say (then ``t`` must be wall time)."""
    autodeflate: bool = False
    """The balloon device has deflate-on-OOM (libvirt ``autodeflate='on'``): the guest takes
    balloon pages back itself before its OOM killer runs, so its balloon can grow without
    anyone on the host asking (see ``decide``'s ``self-deflated``)."""
    free_page_reporting: bool = False
    """The balloon device reports freed pages to the host (``freePageReporting='on'``)."""
    tags: DomainTags = NO_TAGS
    """The domain's own metadata about its policy (``DomainTags``); none by default."""

    def stat(self, name: str) -> int | None:
        return self.stats.get(name)

    @property
    def has_extended(self) -> bool:
        """True when the guest sends the 6.12 pressure counters (tags 10-15)."""
        return self.stats.keys() >= _EXTENDED_SET

    @property
    def available_kib(self) -> int | None:
        """Memory the guest could use without reclaiming hard, from its own report.

        MemAvailable when the guest sends it; otherwise MemFree (a pessimistic stand-in that
        ignores page cache). Capped at the balloon's current size: a guest cannot honestly have
        more available than it has.
        """
        raw = self.stats.get(STAT_AVAILABLE_MEMORY)
        if raw is None:
            raw = self.stats.get(STAT_FREE_MEMORY)
        if raw is None:
            return None
        return min(raw // 1024, self.actual_kib)


    @property
    def free_kib(self) -> int | None:
        """Memory the guest has not used at all (MemFree; page cache is not free), capped at
        the balloon's current size; None when it reports none."""
        raw = self.stats.get(STAT_FREE_MEMORY)
        return None if raw is None else min(raw // 1024, self.actual_kib)


def wall_time(sample: GuestSample, now: float) -> float:
    """``now`` (the core's monotonic clock) on the host's wall clock, QEMU's ``last_update``'s.

    From the sample's own age when the reader gave it; else ``now`` is taken as wall time.
    """
    if sample.stats_age_s is None:
        return now
    return sample.last_update + sample.stats_age_s + (now - sample.t)


def size_problem(actual_kib: int, max_kib: int) -> str | None:
    """Why a guest's balloon sizes cannot be used, or None when they can.

    The second half of the gate: a domain maximum of 0 (or beyond any real guest) or a balloon
    size of 0 is what a confused or lying source reports, never something to size a balloon
    from; decide() leaves such a guest alone for the tick instead of computing a target of 0.
    """
    if not 0 < max_kib <= MAX_GUEST_KIB:
        return f"domain maximum {max_kib} KiB makes no sense"
    if not 0 < actual_kib <= MAX_GUEST_KIB:
        return f"balloon size {actual_kib} KiB makes no sense"
    return None


def sanitize_guest_stats(raw: Mapping[str, object]) -> tuple[dict[str, int], list[str]]:
    """Keep only known statistics with plausible integer values.

    Returns the clean mapping and a list of human-readable problems (empty when the input was
    clean). Never raises on any input mapping.
    """
    clean: dict[str, int] = {}
    problems: list[str] = []
    for name, value in raw.items():
        if name not in KNOWN_STATS:
            continue  # QEMU may add statistics; ignoring unknown ones is forward compatible.
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{name}: not an integer ({type(value).__name__})")
            continue
        if value == U64_ABSENT:
            continue  # "not reported": absent, never a number.
        if value < 0 or value > MAX_SANE_VALUE:
            problems.append(f"{name}: implausible value {value}")
            continue
        clean[name] = value
    return clean, problems
