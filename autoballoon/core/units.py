"""Unit conversions, named by what they convert.

libvirt speaks KiB, QEMU's guest-stats bytes, people MiB. Sizes carry their unit in their name
(``*_kib``, ``*_bytes``, ``*_mib``); these constants are the only way to cross between them.
"""

BYTES_PER_KIB = 1024
KIB_PER_MIB = 1024
BYTES_PER_MIB = BYTES_PER_KIB * KIB_PER_MIB


def mib(kib: int) -> int:
    """KiB in whole MiB, rounded down (for messages)."""
    return kib // KIB_PER_MIB
