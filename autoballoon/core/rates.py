"""Rates: per-second change of the guest's cumulative counters over a window of samples.

Pure. Input is a guest's recent samples (oldest first); output is a ``Rates`` value the classifier
reads, measured between two reports of the guest (not two ticks). A counter that goes down means
the guest rebooted (or lies): the window restarts there, and no negative rate is ever produced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from autoballoon.core.samples import (
    CUMULATIVE_STATS,
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
    GuestSample,
)
from autoballoon.core.units import BYTES_PER_MIB


class Rates(NamedTuple):
    """Counter changes between two samples; None where either end lacks the statistic."""

    span_s: float
    oom_kills: int | None
    """OOM kills in the span (a count, not a rate: one kill is already critical)."""
    alloc_stalls: int | None
    """Allocation stalls in the span (a count: STALL[n] means exactly zero)."""
    alloc_stalls_per_s: float | None
    async_scan_mib_per_s: float | None
    direct_scan_mib_per_s: float | None
    async_reclaim_mib_per_s: float | None
    direct_reclaim_mib_per_s: float | None
    direct_scan_bytes: int | None
    """Bytes scanned by direct reclaim in the span (DSCAN[n] means exactly zero)."""
    swap_in_mib_per_s: float | None
    swap_out_mib_per_s: float | None
    major_faults_per_s: float | None


def counters_reset(before: GuestSample, after: GuestSample) -> bool:
    """True when a cumulative counter went down between two samples: the guest rebooted.

    The one place a reboot is recognised; ``reset_index`` and decide's history both use it.
    """
    a, b = before.stats, after.stats
    for name in CUMULATIVE_STATS:
        x = a.get(name)
        if x is not None:
            y = b.get(name)
            if y is not None and y < x:
                return True
    return False


def reset_index(history: Sequence[GuestSample]) -> int:
    """Index of the first sample after the latest counter drop (a reboot), 0 if none."""
    start = 0
    for i in range(1, len(history)):
        if counters_reset(history[i - 1], history[i]):
            start = i
    return start


def baseline(
    history: Sequence[GuestSample], cutoff_t: float, clean: bool = False
) -> GuestSample | None:
    """The sample to measure from: the latest one taken at or before ``cutoff_t`` that carries
    an earlier report (``last_update``) than the newest sample.

    Across reports, not ticks: a guest reporting less often than the window would otherwise be
    measured between two readings of one report, and read as calm between its reports. Falls
    back to the oldest usable sample when none fits. Samples before the latest counter reset
    are never used (``clean=True``: the caller guarantees there is none). None when fewer than
    two usable samples exist.
    """
    usable = history if clean else history[reset_index(history) :]
    if len(usable) < 2:
        return None
    report = usable[-1].last_update
    for sample in reversed(usable[:-1]):
        if sample.t <= cutoff_t and sample.last_update != report:
            return sample
    return usable[0]


def compute_rates(old: GuestSample, new: GuestSample) -> Rates | None:
    """Rates between two samples of the same guest; None when no time passed between them.

    The span is the time between the two reports (``last_update``) when both have one and it
    moved forward: the counters changed between reports, whenever they were read. Otherwise
    it is the time between the readings.
    """
    if new.t <= old.t:
        return None
    span = float(new.last_update - old.last_update)
    if old.last_update <= 0 or span <= 0:
        span = new.t - old.t
    a, b = old.stats, new.stats
    d: dict[str, int] = {}
    for name in RATE_STATS:
        x, y = a.get(name), b.get(name)
        if x is not None and y is not None:
            d[name] = y - x if y > x else 0
    per_s, mib_per_s = 1.0 / span, 1.0 / span / BYTES_PER_MIB
    get = d.get
    stalls, ascan, dscan = get(STAT_ALLOC_STALLS), get(STAT_ASYNC_SCANS), get(STAT_DIRECT_SCANS)
    arclm, drclm = get(STAT_ASYNC_RECLAIMS), get(STAT_DIRECT_RECLAIMS)
    swin, swout, majflt = get(STAT_SWAP_IN), get(STAT_SWAP_OUT), get(STAT_MAJOR_FAULTS)
    return Rates(
        span_s=span,
        oom_kills=get(STAT_OOM_KILLS),
        alloc_stalls=stalls,
        alloc_stalls_per_s=None if stalls is None else stalls * per_s,
        async_scan_mib_per_s=None if ascan is None else ascan * mib_per_s,
        direct_scan_mib_per_s=None if dscan is None else dscan * mib_per_s,
        async_reclaim_mib_per_s=None if arclm is None else arclm * mib_per_s,
        direct_reclaim_mib_per_s=None if drclm is None else drclm * mib_per_s,
        direct_scan_bytes=dscan,
        swap_in_mib_per_s=None if swin is None else swin * mib_per_s,
        swap_out_mib_per_s=None if swout is None else swout * mib_per_s,
        major_faults_per_s=None if majflt is None else majflt * per_s,
    )
