"""Policies for lab runs: the shipped presets as a policy directory or as loaded values.

The lab's demo, soak, benchmarks and tests use the aggressive preset (proactive mode, short
stability and cooldown) so that things happen within minutes; the on-demand benchmark uses the
shipped default policy with a host reserve placed just above the host's MemAvailable.
"""

from __future__ import annotations

import re
from pathlib import Path

from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.policyfiles import load_default

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"


def preset_path(preset: str = "aggressive") -> Path:
    """The shipped policy file: ``policies/presets/<preset>.toml``, or ``policies/default.toml``
    for ``preset="default"``."""
    if preset == "default":
        return POLICIES / "default.toml"
    return POLICIES / "presets" / f"{preset}.toml"


def _policy_dir(parent: Path, text: str) -> Path:
    """A policy directory under ``parent`` whose default.toml is ``text`` (mode 0644, as the
    daemon's strict checks want)."""
    policies = parent / "policies"
    policies.mkdir(mode=0o755, parents=True, exist_ok=True)
    default = policies / "default.toml"
    default.write_text(text)
    default.chmod(0o644)
    return policies


def preset_policy_dir(parent: Path, preset: str = "aggressive") -> Path:
    """A policy directory under ``parent`` whose default.toml is a shipped preset."""
    return _policy_dir(parent, preset_path(preset).read_text())


def preset_policies(preset: str = "aggressive", **overrides: object) -> PolicySet:
    """A shipped preset loaded as the daemon loads it, with guest-policy fields overridden."""
    policy, host = load_default(preset_path(preset))
    return PolicySet(GuestPolicy.model_validate(policy.model_dump() | overrides), host)


def host_mem_available_kib(meminfo: Path = Path("/proc/meminfo")) -> int:
    """The host's MemAvailable, as the daemon reads it."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise ValueError(f"{meminfo}: no MemAvailable line")


def field_policy_dir(parent: Path, preset: str = "default", **fields: object) -> Path:
    """A policy directory whose default.toml is a shipped policy with some fields set (each
    replacing its ``field = ...`` line, or its commented ``# field = (unset)`` one): what an
    operator who changed only those fields runs. The daemon's loader must read them back."""
    source = preset_path(preset)
    text = source.read_text()
    for name, value in fields.items():
        toml = f'"{value}"' if isinstance(value, str) else str(value)
        text, n = re.subn(rf"(?m)^(# )?{name}\s*=.*$", f"{name} = {toml}", text)
        if n != 1:
            raise ValueError(f"{source}: expected one `{name} =` line, found {n}")
    policies = _policy_dir(parent, text)
    policy, host = load_default(policies / "default.toml")  # the daemon must accept it
    for name, value in fields.items():
        got = getattr(policy if name in GuestPolicy.model_fields else host, name)
        if got != value:
            raise ValueError(f"{name} = {value!r} did not land ({got!r})")
    return policies


def reserve_policy_dir(parent: Path, reserve_mib: int, preset: str = "default") -> Path:
    """A policy directory whose default.toml is a shipped policy with ``[host] reserve_mib``
    set: with a reserve above the host's MemAvailable, `on-demand` sees a host shortfall of
    exactly the difference, without taking memory away from anyone else on the host."""
    return field_policy_dir(parent, preset, reserve_mib=int(reserve_mib))


def mode_policy_dir(parent: Path, mode: str, preset: str = "default") -> Path:
    """A policy directory whose default.toml is a shipped policy with ``[policy] mode`` set:
    what an operator who changed only the mode runs."""
    return field_policy_dir(parent, preset, mode=mode)
