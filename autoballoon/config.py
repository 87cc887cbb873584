"""Daemon configuration: a typed, frozen model loaded from TOML, every field also a CLI flag.

Sits beside policyfiles: policies say how guests are sized, this says how the daemon runs. Each
setting is written once, here: its type, default and docstring are the TOML key, the `run` flag
(``commands/run_command.py`` generates the flags from this model) and its help; whether a reload
applies it is ``LIVE``. Errors are a ``ConfigError`` naming the file, the field and the fix.
"""

from __future__ import annotations

import difflib
import logging
import re
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from autoballoon.hostcgroup import read_cgroup_memory
from autoballoon.policyfiles import PolicyFileError, read_toml

log = logging.getLogger("autoballoon")

DEFAULT_CONFIG = Path("/etc/autoballoon/autoballoon.toml")
DEFAULT_POLICY_DIR = Path("/etc/autoballoon/policies")
RUN_DIR = Path("/run/autoballoon")


class ConfigError(PolicyFileError):
    """A daemon config that cannot be used: which file, which field, and how to fix it.

    A ``PolicyFileError`` too: both are an operator's file to correct, and callers that refuse
    bad input catch both alike.
    """

    def __init__(self, file: str, field: str, problem: str, fix: str = "") -> None:
        self.file, self.field, self.problem, self.fix = file, field, problem, fix
        where = f"{file}: [daemon] {field}" if field else file
        super().__init__(f"{where}: {problem}" + (f"; {fix}" if fix else ""))


def metrics_url(address: str, port: int) -> str:
    """The metrics endpoint's URL, as the log and the status file give it (an IPv6 address in
    brackets)."""
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/metrics"


LOCAL_POLICY_DIR = Path("policies")
POLICY_DIR_RULE = f"{DEFAULT_POLICY_DIR} when it holds a default.toml, else ./policies"


def default_policy_dir(installed: Path = DEFAULT_POLICY_DIR) -> Path:
    """The policy directory of run, check-policy and release when none is given: the installed
    one when it holds a default.toml, else ./policies when that does (a checkout), else the
    installed one again, so that the error names where policies belong. (replay uses the
    policies its trace records.)"""
    if (installed / "default.toml").is_file():
        return installed
    return LOCAL_POLICY_DIR if (LOCAL_POLICY_DIR / "default.toml").is_file() else installed


class DaemonConfig(BaseModel):
    """`[daemon]` table of autoballoon.toml."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    uri: str = "qemu:///system"
    """libvirt connection URI. Opened at start: a URI that cannot be opened (no such driver,
    authentication refused) stops the daemon with exit code 4."""
    interval_s: float = Field(default=5.0, ge=0.5, le=600, json_schema_extra={"flag": "interval"})
    """Seconds between ticks. 5 s answers an OOM within 10 s while costing little; guests
    report statistics every `stats_period_s`, so ticking faster than that buys nothing."""
    stats_period_s: int = Field(default=1, ge=1, le=60, json_schema_extra={"flag": "stats-period"})
    """Balloon statistics period set on guests that have none (setMemoryStatsPeriod)."""
    policy_dir: Path = Field(
        default_factory=default_policy_dir, json_schema_extra={"flag": "policies"}
    )
    """Folder holding default.toml and per-VM policy files. Default: /etc/autoballoon/policies
    when it holds a default.toml, else ./policies (a checkout); the same for check-policy and
    release."""
    strict_modes: bool = True
    """Refuse policy files writable by users other than root/the owner (like sshd)."""
    extended_stats: Literal["qmp", "off"] = "qmp"
    """`qmp` reads the Linux 6.12 pressure counters through QEMU's guest-stats (libvirt logs
    the domain as 'tainted: custom-monitor'); `off` uses libvirt's standard stats only."""
    include: tuple[str, ...] = ("*",)
    """Domain name globs to manage (repeatable flag). Others are never read or touched."""
    exclude: tuple[str, ...] = ()
    """Domain name globs never to manage (repeatable flag; wins over include)."""
    log_format: Literal["human", "json"] = "human"
    """`human` lines, or one JSON object per line for log shippers."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Minimum level logged."""
    log_priority: Literal["auto", "always", "never"] = "auto"
    """Start every log line (JSON lines and each line of a multi-line message too) with its
    syslog priority, `<3>` for an error, which journald reads as the line's priority. `auto`:
    when stderr is the journal (JOURNAL_STREAM names it); `always` for a journal reached some
    other way (a wrapper, a pipe to systemd-cat --level-prefix)."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Prometheus metrics port; 0 (the default) turns the endpoint off."""
    metrics_address: str = "127.0.0.1"
    """Address the metrics endpoint binds to: loopback unless you mean it."""
    status_file: Path = RUN_DIR / "status.json"
    """Where the daemon publishes its state for `autoballoon status` (mode 0600)."""
    lock_file: Path | None = None
    """The lock that keeps one controller per libvirt URI on a host, holding the owner's pid.
    Default: /run/autoballoon/<uri>.lock (the URI's letters and digits, e.g. qemu-system.lock
    for qemu:///system), so a second daemon on the same URI, even a dry run, refuses to start
    (exit code 5). Set it only to run throwaway daemons side by side (tests)."""
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

    def read_budget_s(self) -> float:
        """How long one tick waits for the guests' statistics: half an interval, 2 s at most
        (a guest whose monitor is busy is read at a later tick)."""
        return min(2.0, self.interval_s / 2)

    def lock_path(self) -> Path:
        """``lock_file``, or the default one for this URI."""
        if self.lock_file is not None:
            return self.lock_file
        slug = "-".join(part for part in re.split(r"[^A-Za-z0-9]+", self.uri) if part)
        return RUN_DIR / f"{slug or 'default'}.lock"


LIVE: frozenset[str] = frozenset(
    {
        "interval_s",
        "policy_dir",
        "strict_modes",
        "include",
        "exclude",
        "log_format",
        "log_level",
        "log_priority",
        "on_stop",
        "host_memory_cgroup",
    }
)
"""Settings a reload (SIGHUP) applies to the running daemon. Any other change (the URI, the
metrics endpoint, the status and lock files, how guests' statistics are read) is named in the
reload's log line as needing a restart, and not applied."""


class ConfigChange(NamedTuple):
    """What a reload found changed, split by whether it can be applied live."""

    applied: dict[str, tuple[Any, Any]]
    need_restart: dict[str, tuple[Any, Any]]


def diff_config(old: DaemonConfig, new: DaemonConfig) -> ConfigChange:
    """Every field that differs, as (old, new), split into live ones and the others."""
    applied: dict[str, tuple[Any, Any]] = {}
    need_restart: dict[str, tuple[Any, Any]] = {}
    for name in DaemonConfig.model_fields:
        before, after = getattr(old, name), getattr(new, name)
        if before != after:
            (applied if name in LIVE else need_restart)[name] = (before, after)
    return ConfigChange(applied, need_restart)


RETIRED: dict[str, str] = {
    "libvirt_retry_s": "a tick never waits for libvirt: it fails at once while libvirt is "
    "unreachable, and reconnection runs in the background with backoff",
}
"""Settings that no longer do anything: still accepted in a config file, with a warning."""


def load_config(path: Path | None, overrides: dict[str, Any]) -> DaemonConfig:
    """The file's [daemon] table (if any), then CLI overrides (None values ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            doc = read_toml(path)
        except PolicyFileError as err:
            raise ConfigError(str(path), "", str(err).removeprefix(f"{path}: ")) from err
        unknown = set(doc) - {"daemon"}
        if unknown:
            raise ConfigError(
                str(path), "", f"unknown table(s) {sorted(unknown)}", "expected only [daemon]"
            )
        table = doc.get("daemon", {})
        if not isinstance(table, dict):
            raise ConfigError(str(path), "daemon", "not a table", "write it as [daemon]")
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
        first, *more = err.errors()
        field = ".".join(str(x) for x in first["loc"])
        problem = first["msg"]
        for e in more:  # one error per line, each naming its field
            problem += f"\n{where}: [daemon] {'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
        raise ConfigError(where, field, problem, _fix(field)) from err


def _fix(field: str) -> str:
    """How to correct ``field``: what it accepts, from the model."""
    info = DaemonConfig.model_fields.get(field)
    if info is None:
        close = difflib.get_close_matches(field, DaemonConfig.model_fields, n=1)
        if close:
            return f"did you mean {close[0]}?"
        known = ", ".join(DaemonConfig.model_fields)
        return f"remove it (known settings: {known})"
    return f"see `autoballoon run --help`, --{flag_name(field)}"


def flag_name(field: str) -> str:
    """The `run` flag of a setting, without the dashes: its field name in kebab case, unless
    the field names another (``json_schema_extra={"flag": ...}``)."""
    extra = DaemonConfig.model_fields[field].json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("flag"), str):
        return str(extra["flag"])
    return field.replace("_", "-")
