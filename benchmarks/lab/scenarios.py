"""The lab benchmark's scenarios: which guests, which workloads, how long, and the modes.

Pure data: nothing here touches libvirt. ``runner`` boots and runs them, ``analysis`` turns a
run into numbers, ``render`` and ``plot`` into lab.md and lab.png.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.common import GUEST_PREFIX
from contrib.lab import GuestSpec

MODES = {
    "none": "no controller (observe only)",
    "off": "autoballoon, extended_stats=off",
    "qmp": "autoballoon, extended_stats=qmp (default)",
}
CALM_KINDS = {"idle", "steady", "cache", "thrash"}
"""Workloads that do not change over time: the direction-change target applies to them."""
RECLAIM_KINDS = {"idle", "steady"}
"""The 80 %-of-oracle target applies to these."""


@dataclass(frozen=True)
class BGuest:
    role: str
    mem_mib: int
    workload: str
    kind: str
    autodeflate: bool = False
    """The balloon device has deflate-on-OOM (``autodeflate='on'``)."""

    def spec(self, scenario: str) -> GuestSpec:
        return GuestSpec(
            f"{GUEST_PREFIX}{scenario}-{self.role}",
            self.mem_mib,
            self.workload,
            autodeflate=self.autodeflate,
        )


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    guests: tuple[BGuest, ...]
    duration_s: float


BOOT_EST_S = 20.0
"""Seconds from starting the guests to the controller's first tick (TCG, 2 cores, 3-4 guests).
Workload clocks start at guest boot; spikes and ramps are placed with this in mind."""


def scenarios(quick: bool = False) -> list[Scenario]:
    if quick:
        d = 18.0
        at, hold = BOOT_EST_S + 6, 8
        return [
            Scenario("mixed", "idle + steady (quick)", (
                BGuest("idle", 256, "idle", "idle"),
                BGuest("steady", 512, "steady:200", "steady"),
            ), d),
            Scenario("spike", "a spike under the headroom (quick)", (
                BGuest("small", 512, f"idle+spike:96:136:{at:.0f}:{hold}", "spike"),
            ), d),
            Scenario("thrash", "working set close to the size (quick)", (
                BGuest("t512", 512, "thrash:300+cache:128", "thrash"),
            ), d),
        ]
    mixed_d, spike_d, thrash_d = 150.0, 140.0, 120.0
    ramp_s = BOOT_EST_S + 0.4 * mixed_d
    at, hold = BOOT_EST_S + 0.55 * spike_d, 0.25 * spike_d
    return [
        Scenario(
            "mixed",
            "four guests: idle 256 MiB, steady 200 MiB of 512, a ramp 48->400 MiB of 768 "
            f"(over the first {ramp_s:.0f} s after boot), 384 MiB of re-read page cache of 1 GiB",
            (
                BGuest("idle", 256, "idle", "idle"),
                BGuest("steady", 512, "steady:200", "steady"),
                BGuest("ramp", 768, f"ramp:48:400:{ramp_s:.0f}", "ramp"),
                BGuest("cache", 1024, "cache:384", "cache"),
            ),
            mixed_d,
        ),
        Scenario(
            "spike",
            f"two 512 MiB guests holding 96 MiB that jump at {at:.0f} s after boot for "
            f"{hold:.0f} s: by +40 MiB (under the preset's 48 MiB headroom) and by +224 MiB "
            "(far over it); an idle 1 GiB bystander",
            (
                BGuest("small", 512, f"idle+spike:96:136:{at:.0f}:{hold:.0f}", "spike"),
                BGuest("large", 512, f"idle+spike:96:320:{at:.0f}:{hold:.0f}", "spike"),
                BGuest("idle", 1024, "idle", "idle"),
            ),
            spike_d,
        ),
        Scenario(
            "thrash",
            "working sets close to the guest size: anonymous memory continually freed and "
            "re-faulted plus page cache re-read every 5 s, 300 + 128 MiB of 512 and 440 + 192 "
            "MiB of 768. The cache counts as available memory, but the guest re-reads it: "
            "taking it makes the guest re-read from its disk",
            (
                BGuest("t512", 512, "thrash:300+cache:128", "thrash"),
                BGuest("t768", 768, "thrash:440+cache:192", "thrash"),
            ),
            thrash_d,
        ),
    ]

