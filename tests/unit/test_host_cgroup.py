"""host_memory_cgroup: the host memory on-demand protects can be a memory cgroup's limit.

Fake cgroup directories (v1 and v2 layouts) under tmp_path; a fake /proc/meminfo for the host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from autoballoon.cli import main
from autoballoon.config import DaemonConfig, load_config
from autoballoon.core.samples import HostSample
from autoballoon.hostcgroup import CgroupMemory, HostCgroupError, cgroup_host, read_cgroup_memory
from autoballoon.hypervisor import Reading
from autoballoon.observe import Observer
from autoballoon.policyfiles import PolicyFileError


class NoGuests:
    """A hypervisor with no guests: these tests are about the host sample."""

    def read(self, wanted: Callable[[str], bool]) -> Reading:
        return Reading()


MIB = 1024 * 1024
HOST_TOTAL_KIB = 24 * 1024 * 1024
HOST_AVAIL_KIB = 20 * 1024 * 1024


def v2_dir(root: Path, limit: str, current: int, inactive: int, active: int = 0) -> Path:
    d = root / "machine.slice"
    d.mkdir(parents=True, exist_ok=True)
    (d / "memory.max").write_text(limit + "\n")
    (d / "memory.current").write_text(f"{current}\n")
    (d / "memory.stat").write_text(
        f"anon {current - inactive - active}\nfile {inactive + active}\n"
        f"active_file {active}\ninactive_file {inactive}\n"
    )
    return d


def v1_dir(root: Path, limit: int, usage: int, inactive: int, local_inactive: int = 0) -> Path:
    d = root / "memory" / "machine"
    d.mkdir(parents=True, exist_ok=True)
    (d / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (d / "memory.usage_in_bytes").write_text(f"{usage}\n")
    # v1 lists the cgroup's own counters first, then the hierarchical total_* ones.
    (d / "memory.stat").write_text(
        f"cache 0\ninactive_file {local_inactive}\ntotal_cache {inactive}\n"
        f"total_inactive_file {inactive}\n"
    )
    return d


def proc_dir(root: Path, total_kib: int = HOST_TOTAL_KIB, avail_kib: int = HOST_AVAIL_KIB) -> Path:
    proc = root / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text(
        f"MemTotal: {total_kib} kB\nMemFree: {avail_kib // 2} kB\nMemAvailable: {avail_kib} kB\n"
    )
    return proc


def host(total_kib: int = HOST_TOTAL_KIB, avail_kib: int = HOST_AVAIL_KIB) -> HostSample:
    return HostSample(t=1.0, mem_total_kib=total_kib, mem_available_kib=avail_kib)


# --- reading both layouts ----------------------------------------------------------------------


def test_v2_limit_usage_and_inactive_file(tmp_path: Path) -> None:
    d = v2_dir(tmp_path, str(2048 * MIB), 1500 * MIB, inactive=100 * MIB, active=50 * MIB)
    assert read_cgroup_memory(d) == CgroupMemory(2, 2048 * 1024, 1500 * 1024, 100 * 1024)


def test_v2_without_a_limit(tmp_path: Path) -> None:
    d = v2_dir(tmp_path, "max", 1500 * MIB, inactive=0)
    assert read_cgroup_memory(d).limit_kib is None


def test_v1_uses_the_hierarchical_inactive_file(tmp_path: Path) -> None:
    d = v1_dir(tmp_path, 1765 * MIB, 1700 * MIB, inactive=30 * MIB, local_inactive=1 * MIB)
    assert read_cgroup_memory(d) == CgroupMemory(1, 1765 * 1024, 1700 * 1024, 30 * 1024)


def test_v1_without_a_limit(tmp_path: Path) -> None:
    d = v1_dir(tmp_path, 9223372036854771712, 1700 * MIB, inactive=0)
    assert read_cgroup_memory(d).limit_kib is None


# --- what the host sample becomes ----------------------------------------------------------------


def test_limited_cgroup_is_the_host() -> None:
    cg = CgroupMemory(1, 1765 * 1024, 1700 * 1024, 30 * 1024)
    h = cgroup_host(host(), cg)
    assert (h.mem_total_kib, h.mem_available_kib) == (1765 * 1024, (65 + 30) * 1024)
    assert h.t == 1.0


def test_cgroup_never_has_more_than_the_host() -> None:
    # A limit above the host's memory and room above the host's MemAvailable: the host's win.
    cg = CgroupMemory(2, 64 * 1024 * 1024, 1024, 0)
    h = cgroup_host(host(avail_kib=3 * 1024 * 1024), cg)
    assert (h.mem_total_kib, h.mem_available_kib) == (HOST_TOTAL_KIB, 3 * 1024 * 1024)


def test_usage_over_the_limit_is_no_room_not_negative() -> None:
    cg = CgroupMemory(1, 1000 * 1024, 1010 * 1024, 0)
    assert cgroup_host(host(), cg).mem_available_kib == 0


def test_unlimited_cgroup_is_the_whole_host() -> None:
    assert cgroup_host(host(), CgroupMemory(2, None, 5 * 1024 * 1024, 0)) == host()


# --- bad input ---------------------------------------------------------------------------------


V2 = {"memory.max": "100", "memory.current": "10"}
V1 = {"memory.limit_in_bytes": "100", "memory.usage_in_bytes": "10"}


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        (None, "no such directory"),
        ({}, "not a memory cgroup"),
        ({"memory.max": "lots"}, "expected a number"),
        ({"memory.max": "max", "memory.current": "-5"}, "negative"),
        (V2, "memory.stat: missing"),
        (V1 | {"memory.stat": "cache 0"}, "no total_inactive_file line"),
        (V1 | {"memory.stat": "total_inactive_file x"}, "not a number"),
    ],
)
def test_bad_cgroup_says_what_is_wrong(
    tmp_path: Path, files: dict[str, str] | None, needle: str
) -> None:
    d = tmp_path / "cg"
    if files is not None:
        d.mkdir()
        for name, text in files.items():
            (d / name).write_text(text + "\n")
    with pytest.raises(HostCgroupError, match=needle) as err:
        read_cgroup_memory(d)
    assert str(tmp_path) in str(err.value)


def test_unreadable_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    d = v2_dir(tmp_path, "100", 10, 0)
    (d / "memory.current").unlink()
    (d / "memory.current").mkdir()  # reading it raises IsADirectoryError, an OSError
    with pytest.raises(HostCgroupError, match="cannot read"):
        read_cgroup_memory(d)


# --- the config: checked at start-up -----------------------------------------------------------


def test_config_accepts_a_readable_cgroup(tmp_path: Path) -> None:
    d = v2_dir(tmp_path, "max", 10, 0)
    path = tmp_path / "c.toml"
    path.write_text(f"[daemon]\nhost_memory_cgroup = '{d}'\n")
    assert load_config(path, {}).host_memory_cgroup == d
    assert DaemonConfig().host_memory_cgroup is None


def test_config_refuses_a_cgroup_that_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[daemon]\nhost_memory_cgroup = '{tmp_path / 'nope'}'\n")
    with pytest.raises(PolicyFileError, match="host_memory_cgroup") as err:
        load_config(path, {})
    assert str(path) in str(err.value) and "no such directory" in str(err.value)


def test_run_refuses_a_bad_cgroup_flag_with_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cg").mkdir()
    assert main(["run", "--host-memory-cgroup", str(tmp_path / "cg"), "--once"]) == 3
    err = capsys.readouterr().err
    assert "host_memory_cgroup" in err and "not a memory cgroup" in err


# --- at a tick: the observer -------------------------------------------------------------------


def test_observer_reports_the_cgroup_as_the_host(tmp_path: Path) -> None:
    d = v1_dir(tmp_path, 2000 * MIB, 1900 * MIB, inactive=20 * MIB)
    obs = Observer(NoGuests(), proc_dir(tmp_path), host_cgroup=d).observe(5.0)
    assert obs.host == HostSample(5.0, 2000 * 1024, 120 * 1024)


def test_observer_falls_back_to_the_host_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = v2_dir(tmp_path, str(2000 * MIB), 1900 * MIB, inactive=0)
    observer = Observer(NoGuests(), proc_dir(tmp_path), host_cgroup=d)
    caplog.set_level(logging.INFO, logger="autoballoon.observe")
    (d / "memory.current").write_text("garbage\n")
    first = observer.observe(1.0).host
    second = observer.observe(2.0).host
    assert (first.mem_total_kib, first.mem_available_kib) == (HOST_TOTAL_KIB, HOST_AVAIL_KIB)
    assert second.mem_available_kib == HOST_AVAIL_KIB
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "garbage" in warnings[0].getMessage()
    (d / "memory.current").write_text(f"{1900 * MIB}\n")
    assert observer.observe(3.0).host.mem_available_kib == 100 * 1024
    assert any("readable again" in r.getMessage() for r in caplog.records)
