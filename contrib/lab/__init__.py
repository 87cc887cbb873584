"""The autoballoon lab: real libvirt + QEMU with tiny Linux 6.12 guests (see README.md).

- ``lab``: guests (boot, console reports, balloon and stats period through libvirt);
- ``lock``: the lab lock every lab user holds while it has guests up;
- ``daemon``: `autoballoon run` against lab guests as a real process;
- ``policies``: the shipped presets as policy directories or loaded values;
- ``hostmem``: what a guest's QEMU process holds on the host, and a steady host.
"""

from contrib.lab.daemon import autoballoon_command, daemon_command, run_daemon, start_daemon
from contrib.lab.hostmem import guest_ram_rss_kib, qemu_pid, qemu_rss_kib
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
    ensure_partition,
    parse_report,
)
from contrib.lab.lock import lab_lock
from contrib.lab.policies import (
    field_policy_dir,
    host_mem_available_kib,
    mode_policy_dir,
    preset_policies,
    preset_policy_dir,
    reserve_policy_dir,
)

__all__ = [
    "NEW_STATS",
    "PREFIX",
    "U64_ABSENT",
    "Guest",
    "GuestSpec",
    "Lab",
    "LabError",
    "autoballoon_command",
    "build_image",
    "daemon_command",
    "detect_virt_type",
    "ensure_partition",
    "guest_ram_rss_kib",
    "host_mem_available_kib",
    "lab_lock",
    "field_policy_dir",
    "mode_policy_dir",
    "parse_report",
    "preset_policies",
    "preset_policy_dir",
    "qemu_pid",
    "qemu_rss_kib",
    "reserve_policy_dir",
    "run_daemon",
    "start_daemon",
]
