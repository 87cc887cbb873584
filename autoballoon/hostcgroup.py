"""A memory cgroup as the host whose memory on-demand mode protects (``host_memory_cgroup``).

Where an operator caps what all guests together may use (machine.slice, a libvirt partition),
the memory to protect is the cgroup's, not the host's: its limit is the MemTotal and what it can
still take the MemAvailable. Reads cgroup v2 (memory.max, memory.current, memory.stat) and v1
(memory.limit_in_bytes, memory.usage_in_bytes, memory.stat) directories. Below observe and the
config, which both use it (the config checks the path when it is loaded); above the core only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from autoballoon.core.samples import HostSample


class HostCgroupError(ValueError):
    """The configured host memory cgroup cannot be read: what is wrong and where."""


@dataclass(frozen=True, slots=True)
class CgroupMemory:
    """One reading of a memory cgroup, in KiB."""

    version: int
    """1 (memory.limit_in_bytes...) or 2 (memory.max...)."""
    limit_kib: int | None
    """None: no limit."""
    usage_kib: int
    reclaimable_kib: int
    """Inactive file cache (v2 ``inactive_file``, v1 ``total_inactive_file``): what reclaim
    takes first, at little cost. Active file cache is not counted: it is in use (for QEMU: its
    own code and libraries), and counting it would promise memory that only hurts to take."""


V1_UNLIMITED = 1 << 62
"""cgroup v1 writes "no limit" as the largest page-aligned 63-bit number (9223372036854771712);
anything from here up is no limit."""


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError as err:
        raise HostCgroupError(f"{path}: missing") from err
    except OSError as err:
        raise HostCgroupError(f"{path}: cannot read ({err.strerror or err})") from err


def _read_int(path: Path, text: str | None = None) -> int:
    text = (_read_text(path) if text is None else text).strip()
    try:
        value = int(text)
    except ValueError as err:
        raise HostCgroupError(f"{path}: expected a number of bytes, got {text[:40]!r}") from err
    if value < 0:
        raise HostCgroupError(f"{path}: negative ({value})")
    return value


def _read_stat(path: Path, key: str) -> int:
    for line in _read_text(path).splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError as err:
                raise HostCgroupError(f"{path}: {key} is not a number: {value[:40]!r}") from err
    raise HostCgroupError(f"{path}: no {key} line")


def read_cgroup_memory(path: Path) -> CgroupMemory:
    """The memory cgroup directory ``path`` (v2: memory.max, memory.current, memory.stat; v1:
    memory.limit_in_bytes, memory.usage_in_bytes, memory.stat). Raises HostCgroupError, which
    says what is wrong, for a missing, unreadable or garbled one."""
    try:
        return _read_cgroup(path)
    except HostCgroupError:
        raise
    except OSError as err:  # is_dir/exists on a path that cannot be looked at (EACCES...)
        raise HostCgroupError(f"{path}: cannot read ({err.strerror or err})") from err


def _read_cgroup(path: Path) -> CgroupMemory:
    if not path.is_dir():
        raise HostCgroupError(
            f"{path}: no such directory (expected a memory cgroup, e.g. "
            "/sys/fs/cgroup/machine.slice or /sys/fs/cgroup/memory/machine)"
        )
    if (path / "memory.max").exists():
        raw = _read_text(path / "memory.max")
        limit = None if raw.strip() == "max" else _read_int(path / "memory.max", raw)
        return CgroupMemory(
            2,
            None if limit is None else limit // 1024,
            _read_int(path / "memory.current") // 1024,
            _read_stat(path / "memory.stat", "inactive_file") // 1024,
        )
    if (path / "memory.limit_in_bytes").exists():
        limit = _read_int(path / "memory.limit_in_bytes")
        return CgroupMemory(
            1,
            None if limit >= V1_UNLIMITED else limit // 1024,
            _read_int(path / "memory.usage_in_bytes") // 1024,
            _read_stat(path / "memory.stat", "total_inactive_file") // 1024,
        )
    raise HostCgroupError(
        f"{path}: not a memory cgroup (neither memory.max, cgroup v2, nor "
        "memory.limit_in_bytes, cgroup v1, in it)"
    )


def cgroup_host(host: HostSample, cg: CgroupMemory) -> HostSample:
    """The host sample as the cgroup sees it: MemTotal its limit (at most the host's),
    MemAvailable the limit minus its usage plus its inactive file cache (at most the host's own
    MemAvailable: the cgroup cannot take what the host does not have). A cgroup without a limit
    is the host itself. PSI stays the host's."""
    if cg.limit_kib is None:
        return host
    room = max(0, cg.limit_kib - cg.usage_kib + cg.reclaimable_kib)
    return replace(
        host,
        mem_total_kib=min(cg.limit_kib, host.mem_total_kib),
        mem_available_kib=min(room, host.mem_available_kib),
    )
