"""Fuzzing the policy and config loaders: any file gets a verdict, never a crash.

A verdict is either a loaded policy set or a PolicyFileError naming the file. Nothing else may
escape (no KeyError, TypeError, UnicodeError...), whatever bytes or TOML shapes the file holds.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from autoballoon.config import load_config
from autoballoon.core.policy import GuestPolicy
from autoballoon.policyfiles import PolicyFileError, load_policy_dir

FIELDS = sorted(GuestPolicy.model_fields) + ["bogus", "names", "uuids", "reserve_ratio"]
scalars = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
)


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(v), repr(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


tables = st.dictionaries(
    st.sampled_from(["policy", "host", "match", "daemon", "extra"]),
    st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=5),
    max_size=3,
)


def render(doc: dict[str, dict[str, object]]) -> str:
    out = []
    for table, body in doc.items():
        out.append(f"[{table}]")
        out += [f"{k} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(out) + "\n"


@settings(max_examples=200, deadline=None)
@given(default=tables, per_vm=tables, raw=st.binary(max_size=200), use_raw=st.booleans())
def test_loader_gives_a_verdict_for_any_file(
    default: dict,
    per_vm: dict,
    raw: bytes,
    use_raw: bool,  # type: ignore[type-arg]
) -> None:
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        (directory / "default.toml").write_text(render(default))
        vm = directory / "vm.toml"
        if use_raw:
            vm.write_bytes(raw)
        else:
            vm.write_text(render(per_vm))
        try:
            pset = load_policy_dir(directory, strict_modes=False)
        except PolicyFileError as err:
            assert str(directory) in str(err)
            return
        # an incoherent combination is reported per guest (ValueError), never a crash
        with contextlib.suppress(ValueError):
            pset.resolve("some-vm", "uuid")


@settings(max_examples=200, deadline=None)
@given(doc=tables, raw=st.binary(max_size=200), use_raw=st.booleans())
def test_config_loader_gives_a_verdict_for_any_file(
    doc: dict,
    raw: bytes,
    use_raw: bool,  # type: ignore[type-arg]
) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "autoballoon.toml"
        if use_raw:
            path.write_bytes(raw)
        else:
            path.write_text(render(doc))
        try:
            load_config(path, {})
        except PolicyFileError as err:
            assert str(path) in str(err)
