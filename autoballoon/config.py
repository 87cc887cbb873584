"""Daemon configuration: a typed, frozen model loaded from TOML, every field also a CLI flag.

Sits beside policyfiles: policies say how guests are sized, this says how the daemon runs.
Errors name the file, the field and the fix, like the policy loader's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from autoballoon.hostcgroup import read_cgroup_memory
from autoballoon.policyfiles import PolicyFileError, read_toml

log = logging.getLogger("autoballoon")

DEFAULT_CONFIG = Path("/etc/autoballoon/autoballoon.toml")
DEFAULT_POLICY_DIR = Path("/etc/autoballoon/policies")


def default_policy_dir() -> Path:
    """For the offline commands (check-policy, replay): ./policies when it holds a default.toml
    (a checkout), else the installed ``DEFAULT_POLICY_DIR``."""
    local = Path("policies")
    return local if (local / "default.toml").is_file() else DEFAULT_POLICY_DIR


class DaemonConfig(BaseModel):
    """`[daemon]` table of autoballoon.toml."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    uri: str = "qemu:///system"
    """libvirt connection URI."""
    interval_s: float = Field(default=5.0, ge=0.5, le=600)
    """Seconds between ticks. 5 s answers an OOM within 10 s while costing little; guests
    report statistics every `stats_period_s`, so ticking faster than that buys nothing."""
    stats_period_s: int = Field(default=1, ge=1, le=60)
    """Balloon statistics period set on guests that have none (setMemoryStatsPeriod)."""
    policy_dir: Path = DEFAULT_POLICY_DIR
    """Folder holding default.toml and per-VM policy files."""
    strict_modes: bool = True
    """Refuse policy files writable by users other than root/the owner (like sshd)."""
    extended_stats: Literal["qmp", "off"] = "qmp"
    """`qmp` reads the Linux 6.12 pressure counters through QEMU's guest-stats (libvirt logs
    the domain as 'tainted: custom-monitor'); `off` uses libvirt's standard stats only."""
    include: tuple[str, ...] = ("*",)
    """Domain name globs to manage. Others are never read or touched."""
    exclude: tuple[str, ...] = ()
    """Domain name globs never to manage (wins over include)."""
    log_format: Literal["human", "json"] = "human"
    """`human` lines, or one JSON object per line for log shippers."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Minimum level logged."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Prometheus metrics port; 0 (the default) turns the endpoint off."""
    metrics_address: str = "127.0.0.1"
    """Address the metrics endpoint binds to: loopback unless you mean it."""
    status_file: Path = Path("/run/autoballoon/status.json")
    """Where the daemon publishes its state for `autoballoon status` (mode 0600)."""
    on_stop: Literal["leave", "deflate"] = "leave"
    """On a clean stop, `leave` balloons as they are or `deflate` every managed guest back to
    its policy's maximum (max_mib, else the domain's): for maintenance windows, or when no
    controller will watch them. Guests opted out (enabled = false), in observe mode or whose
    policy has an error are left as they are, as at every tick."""
    host_memory_cgroup: Path | None = None
    """A memory cgroup directory whose limit is the memory `on-demand` protects, instead of
    the whole host's: where an operator caps what the guests may use together (cgroup v2, e.g.
    /sys/fs/cgroup/machine.slice, or v1, e.g. /sys/fs/cgroup/memory/machine). Host MemTotal is
    then the cgroup's limit and MemAvailable the limit minus its usage plus its inactive file
    cache (never more than the host's own); a cgroup without a limit is the whole host. Checked
    when the config is loaded; unreadable at a tick, the whole host is used, with a warning."""

    @field_validator("host_memory_cgroup")
    @classmethod
    def _readable_cgroup(cls, path: Path | None) -> Path | None:
        if path is not None:
            read_cgroup_memory(path)  # a HostCgroupError (a ValueError) says what is wrong
        return path


RETIRED: dict[str, str] = {
    "libvirt_retry_s": "a tick never waits for libvirt: it fails at once while libvirt is "
    "unreachable, and reconnection runs in the background with backoff",
}
"""Settings that no longer do anything: still accepted in a config file, with a warning."""


def load_config(path: Path | None, overrides: dict[str, Any]) -> DaemonConfig:
    """The file's [daemon] table (if any), then CLI overrides (None values ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        doc = read_toml(path)
        unknown = set(doc) - {"daemon"}
        if unknown:
            raise PolicyFileError(f"{path}: unknown table(s) {sorted(unknown)}; expected [daemon]")
        table = doc.get("daemon", {})
        if not isinstance(table, dict):
            raise PolicyFileError(f"{path}: `daemon` must be a table, like [daemon]")
        for key in RETIRED.keys() & table.keys():
            log.warning(
                "%s: [daemon] %s is no longer used (%s); remove it", path, key, RETIRED[key]
            )
        data.update({k: v for k, v in table.items() if k not in RETIRED})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return DaemonConfig.model_validate(data)
    except ValidationError as err:
        where = str(path) if path else "command line"
        lines = [
            f"{where}: [daemon] {'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
            for e in err.errors()
        ]
        raise PolicyFileError("\n".join(lines)) from err
