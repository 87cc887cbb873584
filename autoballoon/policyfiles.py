"""Policy files: TOML on disk -> a validated ``PolicySet``.

Sits between the operator's files and the pure core. Every failure is a ``PolicyFileError`` that
names the file, the field and what to do about it; nothing half-loaded ever reaches the engine.

Layout of a policy directory (only ``*.toml`` directly inside it are read, in name order):

    default.toml   [policy] fields for every guest, [host] host-wide fields. No [match].
    <any>.toml     [match] names = [...], uuids = [...], flavors = [...]  and  [policy] fields
                   to override. A domain may also name one of these files itself, in its
                   libvirt <metadata> (``core.samples.DomainTags``).

Like sshd's StrictModes, a file (or the directory) writable by a user other than root or the
file's owner is refused unless ``strict_modes=False``: a policy decides how much memory a root
daemon takes from other people's guests.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from autoballoon.core.policy import (
    AmbiguousPolicy,
    GuestPolicy,
    HostPolicy,
    Match,
    PolicyLayer,
    PolicySet,
    overlaps,
)

DEFAULT_FILE = "default.toml"
MAX_POLICY_BYTES = 1024 * 1024

M = TypeVar("M", bound=BaseModel)


class PolicyFileError(ValueError):
    """A policy file (or directory) that cannot be used, with a message saying how to fix it."""


class OverlappingPolicies(PolicyFileError, AmbiguousPolicy):
    """Two files that would both match one guest at one precedence: refused when the directory
    loads (check-policy, start, reload), not found out at a tick by a guest left unmanaged."""


def _fmt_validation(path: Path, table: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(table)"
        lines.append(f"{path}: [{table}] {loc}: {e['msg']}")
    return "\n".join(lines)


def check_modes(path: Path) -> None:
    """Refuse a file or directory that someone other than root or its owner could rewrite."""
    st = path.stat()
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PolicyFileError(
            f"{path}: writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run `chmod go-w {path}` or start with --no-strict-modes"
        )
    if st.st_uid not in (0, os.geteuid()):
        raise PolicyFileError(
            f"{path}: owned by uid {st.st_uid}, not root or the daemon's user; "
            f"run `chown root {path}` or start with --no-strict-modes"
        )


def read_toml(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_POLICY_BYTES:
            raise PolicyFileError(f"{path}: {size} bytes is too large for a policy file")
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise PolicyFileError(f"{path}: not valid TOML: {err}") from err
    except UnicodeDecodeError as err:
        raise PolicyFileError(f"{path}: not UTF-8 text: {err}") from err
    except OSError as err:
        raise PolicyFileError(f"{path}: cannot read: {err.strerror or err}") from err


def _table(path: Path, doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise PolicyFileError(f"{path}: `{name}` must be a table, like [{name}]")
    return value


def load_default(path: Path) -> tuple[GuestPolicy, HostPolicy]:
    doc = read_toml(path)
    why = "default.toml applies to every guest; remove [match]"
    _only_tables(path, doc, ("policy", "host"), "match", why)
    return _valid(GuestPolicy, path, doc, "policy"), _valid(HostPolicy, path, doc, "host")


def _only_tables(
    path: Path, doc: dict[str, Any], expected: tuple[str, str], misplaced: str, why: str
) -> None:
    """Refuse a table the file may not have: ``misplaced`` (belongs elsewhere: ``why``), or
    any other than ``expected``."""
    unknown = set(doc) - set(expected)
    if misplaced in unknown:
        raise PolicyFileError(f"{path}: {why}")
    if unknown:
        first, second = expected
        raise PolicyFileError(
            f"{path}: unknown table(s) {sorted(unknown)}; expected [{first}] and [{second}]"
        )


def _valid(model: type[M], path: Path, doc: dict[str, Any], name: str) -> M:
    """Table ``name`` of the file as ``model``; its errors name the file and the field."""
    try:
        return model.model_validate(_table(path, doc, name))
    except ValidationError as err:
        raise PolicyFileError(_fmt_validation(path, name, err)) from err


def load_layer(path: Path, default: GuestPolicy) -> PolicyLayer:
    doc = read_toml(path)
    _only_tables(path, doc, ("match", "policy"), "host", f"[host] belongs in {DEFAULT_FILE} only")
    if "match" not in doc:
        raise PolicyFileError(
            f"{path}: a per-VM policy needs a [match] table with `names`, `uuids` or `flavors`"
        )
    match = _valid(Match, path, doc, "match")
    overrides = _table(path, doc, "policy")
    try:
        # Validate on top of the defaults now, so a bad override fails at load, not at a tick.
        GuestPolicy.model_validate(default.model_dump() | overrides)
    except ValidationError as err:
        raise PolicyFileError(_fmt_validation(path, "policy", err)) from err
    return PolicyLayer(str(path), match, dict(overrides))


def load_policy_dir(directory: Path, strict_modes: bool = True) -> PolicySet:
    """Load a policy directory. Missing default.toml means the built-in defaults."""
    if not directory.is_dir():
        raise PolicyFileError(
            f"{directory}: not a directory; point --policies at the folder holding default.toml"
        )
    if strict_modes:
        check_modes(directory)
    files = sorted(p for p in directory.glob("*.toml") if p.is_file())
    default, host = GuestPolicy(), HostPolicy()
    default_source = "(built-in defaults)"
    layers = []
    for path in files:
        if strict_modes:
            check_modes(path)
        if path.name == DEFAULT_FILE:
            default, host = load_default(path)
            default_source = str(path)
    for path in files:
        if path.name != DEFAULT_FILE:
            layers.append(load_layer(path, default))
    clashes = overlaps(tuple(layers))
    if clashes:
        raise OverlappingPolicies("\n".join(str(c) for c in clashes))
    return PolicySet(default, host, tuple(layers), default_source)


def check_file(path: Path) -> None:
    """Validate one file on its own: a default file (no [match]) or a per-VM file."""
    doc = read_toml(path)
    if "match" in doc:
        load_layer(path, GuestPolicy())
    else:
        load_default(path)
