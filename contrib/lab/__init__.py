"""The autoballoon lab: real libvirt + QEMU with tiny Linux 6.12 guests (see README.md)."""

from contrib.lab.lab import (
    NEW_STATS,
    PREFIX,
    U64_ABSENT,
    Guest,
    GuestSpec,
    Lab,
    LabError,
    build_image,
    detect_virt_type,
    parse_report,
    preset_policy_dir,
)

__all__ = [
    "NEW_STATS",
    "PREFIX",
    "U64_ABSENT",
    "Guest",
    "GuestSpec",
    "Lab",
    "LabError",
    "build_image",
    "detect_virt_type",
    "parse_report",
    "preset_policy_dir",
]
