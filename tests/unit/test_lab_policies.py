"""The lab's policy directories: a shipped policy with some fields set, read back by the daemon's
own loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoballoon.policyfiles import load_default
from contrib.lab.policies import field_policy_dir, mode_policy_dir, reserve_policy_dir


def test_fields_set_over_a_shipped_policy_land_where_the_daemon_reads_them(tmp_path: Path) -> None:
    # startup_ratio is commented out ("(unset)") in default.toml; mode and reserve_mib are set.
    d = field_policy_dir(tmp_path, "default", startup_ratio=0.5, mode="proactive",
                         reserve_mib=300)
    policy, host = load_default(d / "default.toml")
    assert (policy.startup_ratio, policy.mode, host.reserve_mib) == (0.5, "proactive", 300)
    assert (d / "default.toml").stat().st_mode & 0o777 == 0o644


def test_the_wrappers_set_one_field(tmp_path: Path) -> None:
    policy, _ = load_default(mode_policy_dir(tmp_path / "a", "observe") / "default.toml")
    _, host = load_default(reserve_policy_dir(tmp_path / "b", 123) / "default.toml")
    assert (policy.mode, host.reserve_mib) == ("observe", 123)


def test_a_field_the_file_does_not_have_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected one `no_such_field =` line, found 0"):
        field_policy_dir(tmp_path, "default", no_such_field=1)
