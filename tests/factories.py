"""Builders for synthetic samples used by the unit tests of the pure core."""

from __future__ import annotations

from autoballoon.core.samples import (
    STAT_ALLOC_STALLS,
    STAT_ASYNC_RECLAIMS,
    STAT_ASYNC_SCANS,
    STAT_AVAILABLE_MEMORY,
    STAT_DIRECT_RECLAIMS,
    STAT_DIRECT_SCANS,
    STAT_FREE_MEMORY,
    STAT_MAJOR_FAULTS,
    STAT_OOM_KILLS,
    STAT_SWAP_IN,
    STAT_TOTAL_MEMORY,
    GuestSample,
)
from autoballoon.core.units import BYTES_PER_MIB


def sample(
    t: float,
    *,
    name: str = "vm",
    actual_mib: int = 1024,
    max_mib: int = 1024,
    avail_mib: int = 600,
    free_mib: int | None = None,
    oom: int = 0,
    stalls: int = 0,
    ascan_mib: float = 0,
    dscan_mib: float = 0,
    arclm_mib: float = 0,
    drclm_mib: float = 0,
    majflt: int = 0,
    swap_in_mib: float = 0,
    extended: bool = True,
    last_update: int | None = None,
) -> GuestSample:
    stats = {
        STAT_AVAILABLE_MEMORY: avail_mib * BYTES_PER_MIB,
        STAT_FREE_MEMORY: (avail_mib // 2 if free_mib is None else free_mib) * BYTES_PER_MIB,
        STAT_TOTAL_MEMORY: actual_mib * BYTES_PER_MIB,
        STAT_MAJOR_FAULTS: majflt,
        STAT_SWAP_IN: int(swap_in_mib * BYTES_PER_MIB),
    }
    if extended:
        stats |= {
            STAT_OOM_KILLS: oom,
            STAT_ALLOC_STALLS: stalls,
            STAT_ASYNC_SCANS: int(ascan_mib * BYTES_PER_MIB),
            STAT_DIRECT_SCANS: int(dscan_mib * BYTES_PER_MIB),
            STAT_ASYNC_RECLAIMS: int(arclm_mib * BYTES_PER_MIB),
            STAT_DIRECT_RECLAIMS: int(drclm_mib * BYTES_PER_MIB),
        }
    return GuestSample(
        name=name,
        uuid=f"uuid-{name}",
        t=t,
        actual_kib=actual_mib * 1024,
        max_kib=max_mib * 1024,
        last_update=int(t) if last_update is None else last_update,
        stats=stats,
    )
