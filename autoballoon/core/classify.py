"""Classify: one guest's memory pressure, from the seed's matrix.

This is a purely computational function with no side effects: samples, policy and ``now`` in, a
``Classification`` out. The matrix comes from the Linux patch that added the counters
(virtio_balloon: introduce memory scan/reclaim info). Letters: y rising, n not changing, h high
rate, l low rate, * any.

    oom                 OOM[y]
    cgroup-stall        OOM[n] STALL[h] DSCAN[l] DRCLM[l]
    global-reclaim      OOM[n] STALL[h] DSCAN[h] DRCLM[h]   (DRCLM/DSCAN high)
    thrashing           OOM[n] STALL[h] DSCAN[h] DRCLM[l]   (DRCLM/DSCAN low)
    reclaim-struggling  OOM[n] STALL[n] ASCAN[h] DSCAN[n] ARCLM[l]

What Linux 6.12 really counts splits two rows (docs/classification.md has the kernel functions):

    cgroup-oom          OOM[y] STALL[n], available memory never under the low-water mark in the
                        window. The kernel counts every OOM kill in OOM_KILL, a kill inside a
                        memory cgroup at its memory.max included, but ALLOCSTALL only for the
                        guest's own (not a cgroup's) direct reclaim, and the page allocator
                        always reclaims directly before it OOM-kills. So a kill without a stall,
                        on a guest that had memory available throughout, is a cgroup's limit:
                        more memory for the guest would not help it, and it is no reason not to
                        take spare memory.
    running-out         OOM[n] STALL[h] DSCAN[l], available memory under the headroom: the
                        guest's own direct reclaim finds almost nothing to scan (anonymous memory
                        and no swap). A cgroup's reclaim is not counted in STALL, so this is not
                        a cgroup limit: it is the last state before a global OOM.
    cgroup-stall        the same counters with available memory at or above the headroom: the
                        seed's name is kept, but no cgroup limit can produce it on 6.12 (high-order
                        allocations can). Held: nothing to take, and more memory is not wanted.

Where the matrix is silent, two more classes, each with its rule:

    kswapd-reclaim      OOM[n] STALL[n] ASCAN[h] DSCAN[n] ARCLM[h]: kswapd recycles page cache
                        effectively; the guest uses all it has, but is not suffering.
    light-pressure      OOM[n], STALL or DSCAN rising but not high (or swap-in high): the
                        guest is near its limit; nothing to fix yet, nothing to take.

``none`` means no pressure signal at all; ``unknown`` means the statistics are missing or stale.

"High" and "low" are per-second rates and reclaim/scan ratios set in the policy. A DRCLM/DSCAN
(or ARCLM/ASCAN) ratio below ``reclaim_efficiency_low_ratio`` is "l", otherwise "h": the seed
itself reads the two rows by that ratio.

Guests without the 6.12 counters (older kernels) are classified from the standard statistics,
in this order: major faults at or above ``major_faults_high_per_s`` with available memory under
the low-water mark read as ``thrashing`` (code and cache re-read from disk); used memory (the
balloon's size less available memory) falling at once, within the window, by at least the
headroom and a quarter of its peak, from a peak with less than the headroom available, reads
as ``oom`` (the victim's memory freed by a kill: without the OOM counter, the guest looks calmer
right after a kill than before it); swap-in at or above ``swap_high_mib_per_s`` reads as
``global-reclaim``; a storm of major faults with under twice the headroom available, or any
swap-in, reads as ``light-pressure`` (nothing is taken); anything else as ``none``. The low-water
rule in decide() remains their first protection.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import NamedTuple

from autoballoon.core.policy import GuestPolicy
from autoballoon.core.rates import Rates, baseline, compute_rates
from autoballoon.core.samples import GuestSample, wall_time


class PressureClass(StrEnum):
    OOM = "oom"
    CGROUP_OOM = "cgroup-oom"
    RUNNING_OUT = "running-out"
    CGROUP_STALL = "cgroup-stall"
    GLOBAL_RECLAIM = "global-reclaim"
    THRASHING = "thrashing"
    RECLAIM_STRUGGLING = "reclaim-struggling"
    KSWAPD_RECLAIM = "kswapd-reclaim"
    LIGHT_PRESSURE = "light-pressure"
    NONE = "none"
    UNKNOWN = "unknown"


CALM_CLASSES = frozenset({PressureClass.NONE, PressureClass.CGROUP_OOM})
"""Classes under which the guest as a whole is calm: a guest in them may be inflated."""

PRESSURE_CLASSES = frozenset(PressureClass) - CALM_CLASSES - {PressureClass.UNKNOWN}
"""Every class that blocks inflation."""


class Basis(StrEnum):
    EXTENDED = "extended"
    """Classified with the Linux 6.12 counters (the seed's matrix)."""
    STANDARD = "standard"
    """Classified from free/available memory, swap and major faults only."""
    NONE = "none"
    """Not classified (no usable statistics)."""


class Classification(NamedTuple):
    klass: PressureClass
    reason: str
    basis: Basis
    rates: Rates | None = None
    """The rates read; None when none were computed (``unknown``, or a steady history)."""


def _ratio(num: float | None, den: float | None) -> float:
    if not num or not den:
        return 0.0
    return num / den


MAX_PERIOD_S = 3600.0
"""A reporting period above this is not believed (the staleness limit falls back to the policy)."""


def report_period_s(history: Sequence[GuestSample]) -> float | None:
    """How often the guest reports: its balloon stats period when the reader knows it, else
    the shortest step between the reports (``last_update``) in ``history``; None when neither
    is known (or believable)."""
    period = history[-1].stats_period_s if history else None
    if period is None:
        steps = [
            b.last_update - a.last_update
            for a, b in zip(history, history[1:], strict=False)
            if a.last_update > 0 and b.last_update > a.last_update
        ]
        period = float(min(steps)) if steps else None
    return period if period is not None and 0 < period <= MAX_PERIOD_S else None


def stale_after_s(policy: GuestPolicy, history: Sequence[GuestSample]) -> float:
    """How old the newest statistics may be before the guest is ``unknown``.

    The policy's ``stale_after_s``, or, when longer, the guest's own reporting period plus one
    tick: a report is up to a period old when it is read, and is read up to a tick late. The
    tick is the gap between the last two samples, at most one period (a longer gap is a pause
    of ours, not the guest's). The period is inferred from the reports when the reader does
    not give it (traces, older readers).
    """
    newest = history[-1]
    period = report_period_s(history)
    if period is None:
        return policy.stale_after_s
    tick = min(newest.t - history[-2].t, period) if len(history) > 1 else period
    return max(policy.stale_after_s, period + tick)


def classify(
    history: Sequence[GuestSample],
    policy: GuestPolicy,
    now: float,
    since_t: float | None = None,
    clean: bool = False,
    steady: bool = False,
) -> Classification:
    """Classify the newest sample of ``history`` (oldest first).

    Rates are measured from the sample at the start of the policy's rate window, or from the
    last sample before ``since_t`` (the controller's own latest change) when that is later: the
    evidence that caused a change is not counted again after it. ``clean=True`` promises the
    history holds no counter reset (decide() restarts histories at reboots), saving a scan.
    ``steady=True`` promises every sample in ``history`` carries the same statistics: every
    counter's change is zero whatever the baseline, so the answer is ``none`` without rates.
    """
    if not history:
        return Classification(PressureClass.UNKNOWN, "no sample yet", Basis.NONE)
    newest = history[-1]
    if newest.last_update <= 0:
        return Classification(PressureClass.UNKNOWN, "guest has sent no statistics", Basis.NONE)
    age = wall_time(newest, now) - newest.last_update
    if age > stale_after_s(policy, history):
        return Classification(
            PressureClass.UNKNOWN, f"statistics are stale ({age:.0f} s old)", Basis.NONE
        )
    if newest.available_kib is None:
        return Classification(
            PressureClass.UNKNOWN, "guest reports neither available nor free memory", Basis.NONE
        )
    if steady and len(history) > 1:
        return _STEADY_EXTENDED if newest.has_extended else _STEADY_STANDARD
    cutoff = now - policy.rate_window_s
    if since_t is not None:
        cutoff = max(cutoff, since_t)
    base = baseline(history, cutoff, clean)
    rates = None if base is None else compute_rates(base, newest)
    if rates is None or base is None:
        return Classification(PressureClass.UNKNOWN, "need two samples for rates", Basis.NONE)
    window = [s for s in history if s.t >= base.t]
    if newest.has_extended and base.has_extended:
        # The window's lowest available memory (each sample from the baseline on): an OOM kill
        # frees its victim's memory, so the newest figure alone can look plenty after a kill.
        lowest = min(s.available_kib or 0 for s in window)
        return _classify_extended(rates, newest, lowest, policy)
    return _classify_standard(rates, window, policy)


_STEADY_EXTENDED = Classification(PressureClass.NONE, "no pressure signal", Basis.EXTENDED)
_STEADY_STANDARD = Classification(
    PressureClass.NONE, "no pressure signal (standard stats only)", Basis.STANDARD
)
"""``none`` as the two functions below answer it, without rates."""


def _classify_extended(
    r: Rates, newest: GuestSample, lowest_available_kib: int, p: GuestPolicy
) -> Classification:
    def c(klass: PressureClass, reason: str) -> Classification:
        return Classification(klass, reason, Basis.EXTENDED, r)

    # The seed's letters, computed once.
    oom_y = (r.oom_kills or 0) > 0
    stalls = r.alloc_stalls or 0
    stall_rate = r.alloc_stalls_per_s or 0.0
    stall_h = stall_rate >= p.stall_high_per_s and stalls > 0
    dscan = r.direct_scan_mib_per_s or 0.0
    dscan_h = dscan >= p.direct_scan_high_mib_per_s and dscan > 0
    dscan_n = (r.direct_scan_bytes or 0) == 0
    ascan = r.async_scan_mib_per_s or 0.0
    ascan_h = ascan >= p.async_scan_high_mib_per_s and ascan > 0
    d_eff = _ratio(r.direct_reclaim_mib_per_s, dscan)
    a_eff = _ratio(r.async_reclaim_mib_per_s, ascan)

    if oom_y:
        kills = f"{r.oom_kills} OOM kill(s) in the last {r.span_s:.0f} s"
        low_water = p.low_water_kib(newest.actual_kib)
        if stalls == 0 and lowest_available_kib >= low_water:
            return c(
                PressureClass.CGROUP_OOM,
                f"{kills} without an alloc stall, at least {lowest_available_kib // 1024} MiB "
                "available throughout: a memory cgroup's limit inside the guest",
            )
        return c(PressureClass.OOM, kills)
    if stall_h:
        what = f"alloc stalls {stall_rate:.2f}/s"
        if dscan_h:
            if d_eff >= p.reclaim_efficiency_low_ratio:
                return c(
                    PressureClass.GLOBAL_RECLAIM,
                    f"{what}, direct scan {dscan:.1f} MiB/s, reclaimed {d_eff:.0%} of it",
                )
            return c(
                PressureClass.THRASHING,
                f"{what}, direct scan {dscan:.1f} MiB/s but only {d_eff:.0%} reclaimed",
            )
        available = newest.available_kib or 0
        headroom = p.headroom_kib(newest.actual_kib)
        little = f"{what} with little direct scan ({dscan:.2f} MiB/s)"
        if available < headroom:
            return c(
                PressureClass.RUNNING_OUT,
                f"{little} and {available // 1024} MiB available: nothing left to reclaim",
            )
        return c(
            PressureClass.CGROUP_STALL,
            f"{little} with {available // 1024} MiB available: not for lack of memory",
        )
    if stalls == 0 and dscan_n and ascan_h:
        if a_eff < p.reclaim_efficiency_low_ratio:
            return c(
                PressureClass.RECLAIM_STRUGGLING,
                f"kswapd scans {ascan:.1f} MiB/s but reclaims only {a_eff:.0%}",
            )
        return c(
            PressureClass.KSWAPD_RECLAIM,
            f"kswapd recycles page cache ({ascan:.1f} MiB/s scanned, {a_eff:.0%} reclaimed)",
        )
    if stalls > 0 or not dscan_n:
        return c(
            PressureClass.LIGHT_PRESSURE,
            f"some reclaim ({stalls} stall(s), direct scan {dscan:.2f} MiB/s), below high",
        )
    swap_in = r.swap_in_mib_per_s or 0.0
    if swap_in >= p.swap_high_mib_per_s and swap_in > 0:
        return c(PressureClass.LIGHT_PRESSURE, f"swapping in {swap_in:.1f} MiB/s")
    return _STEADY_EXTENDED._replace(rates=r)


def _used_kib(s: GuestSample) -> int:
    """What the guest uses of its balloon: its size less what it has available."""
    return s.actual_kib - (s.available_kib or 0)


def _classify_standard(r: Rates, window: Sequence[GuestSample], p: GuestPolicy) -> Classification:
    def c(klass: PressureClass, reason: str) -> Classification:
        return Classification(klass, reason + " (standard stats only)", Basis.STANDARD, r)

    newest = window[-1]
    available = newest.available_kib or 0
    low_water = p.low_water_kib(newest.actual_kib)
    headroom = p.headroom_kib(newest.actual_kib)
    majflt = r.major_faults_per_s or 0.0
    if majflt >= p.major_faults_high_per_s and majflt > 0 and available < low_water:
        return c(
            PressureClass.THRASHING,
            f"{majflt:.0f} major faults/s with {available // 1024} MiB available",
        )
    # Without the OOM counter, a kill shows as used memory collapsing (its victim's memory is
    # freed at once) on a guest that had come near the end of what it has. Not on a guest that
    # has the counter and lacks it for a moment: that is a reboot (the balloon driver loading
    # again), and a rebooted guest's used memory collapses too.
    before = window[:-1]
    peak = max(before, key=_used_kib)
    drop = _used_kib(peak) - _used_kib(newest)
    near = peak.available_kib or 0
    if (
        drop >= max(headroom, _used_kib(peak) // 4)
        and near < headroom
        and not any(s.has_extended for s in window)
    ):
        return c(
            PressureClass.OOM,
            f"used memory fell by {drop // 1024} MiB at once, from {near // 1024} MiB "
            "available: an OOM kill, by all signs",
        )
    swap_in = r.swap_in_mib_per_s or 0.0
    if swap_in >= p.swap_high_mib_per_s and swap_in > 0:
        return c(PressureClass.GLOBAL_RECLAIM, f"swapping in {swap_in:.1f} MiB/s")
    if majflt >= p.major_faults_high_per_s and majflt > 0 and available < 2 * headroom:
        return c(
            PressureClass.LIGHT_PRESSURE,
            f"{majflt:.0f} major faults/s with {available // 1024} MiB available, near the "
            "headroom",
        )
    if swap_in > 0:
        return c(PressureClass.LIGHT_PRESSURE, f"swapping in {swap_in:.2f} MiB/s")
    return _STEADY_STANDARD._replace(rates=r)
