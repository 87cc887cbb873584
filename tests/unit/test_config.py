"""Daemon config: the shipped example states the defaults; bad values name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoballoon.cli import main
from autoballoon.config import (
    DEFAULT_POLICY_DIR,
    ConfigError,
    DaemonConfig,
    default_policy_dir,
    load_config,
)
from autoballoon.policyfiles import PolicyFileError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_example_config_states_the_defaults() -> None:
    # The installed file names the installed policies; without a file the default is whichever
    # of those and ./policies holds a default.toml (default_policy_dir).
    shipped = load_config(REPO / "contrib" / "autoballoon.toml", {})
    assert shipped == DaemonConfig(policy_dir=DEFAULT_POLICY_DIR)


def test_cli_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[daemon]\ninterval_s = 10\nuri = 'test:///default'\n")
    cfg = load_config(path, {"interval_s": 2.0, "uri": None})
    assert (cfg.interval_s, cfg.uri) == (2.0, "test:///default")


def test_a_retired_setting_is_accepted_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # libvirt_retry_s no longer does anything (a tick never waits for libvirt); a config file
    # that still sets it starts the daemon all the same, and says what to do.
    path = tmp_path / "c.toml"
    path.write_text("[daemon]\ninterval_s = 10\nlibvirt_retry_s = 30\n")
    caplog.set_level("WARNING", logger="autoballoon")
    cfg = load_config(path, {})
    assert cfg == DaemonConfig(interval_s=10)
    (line,) = caplog.records
    assert "libvirt_retry_s is no longer used" in line.getMessage()
    assert str(path) in line.getMessage() and line.getMessage().endswith("remove it")
    assert "libvirt_retry_s" not in DaemonConfig.model_fields


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[daemon]\ninterval_s = 0\n", "interval_s"),
        ("[daemon]\nextended_stats = 'maybe'\n", "extended_stats"),
        ("[daemon]\nintervall_s = 3\n", "intervall_s"),
        ("[demon]\n", "unknown table"),
    ],
)
def test_bad_config_names_file_and_field(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(PolicyFileError, match=needle) as err:
        load_config(path, {})
    assert str(path) in str(err.value)


def test_run_refuses_bad_config_with_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[daemon]\nlog_format = 'xml'\n")
    assert main(["run", "--config", str(path)]) == 3
    assert "log_format" in capsys.readouterr().err


def test_run_refuses_invalid_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies = tmp_path / "p"
    policies.mkdir()
    (policies / "default.toml").write_text("[policy]\nfloor_mib = -1\n")
    code = main(
        [
            "run",
            "--uri",
            "test:///default",
            "--policies",
            str(policies),
            "--no-strict-modes",
            "--once",
            "--status-file",
            str(tmp_path / "s.json"),
            "--lock-file",
            str(tmp_path / "l.lock"),
        ]
    )
    assert code == 3
    assert "floor_mib" in capsys.readouterr().err


def test_every_command_uses_the_installed_policies_else_a_checkouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    installed = tmp_path / "etc"
    assert default_policy_dir(installed) == installed, "nothing anywhere: name the installed one"
    (tmp_path / "policies").mkdir()
    assert default_policy_dir(installed) == installed, "a folder without default.toml is not one"
    (tmp_path / "policies" / "default.toml").write_text("[policy]\n")
    assert default_policy_dir(installed) == Path("policies")
    installed.mkdir()
    (installed / "default.toml").write_text("[policy]\n")
    assert default_policy_dir(installed) == installed, "the installed policies come first"
    # run and release (DaemonConfig) and check-policy share the one rule.
    assert DaemonConfig().policy_dir == default_policy_dir()
    if not (DEFAULT_POLICY_DIR / "default.toml").is_file():
        assert DaemonConfig().policy_dir == Path("policies")


def test_a_config_error_names_file_field_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[daemon]\nintervall_s = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert (err.value.file, err.value.field, err.value.fix) == (
        str(path),
        "intervall_s",
        "did you mean interval_s?",
    )
    path.write_text("[daemon]\ninterval_s = 0.1\n")
    with pytest.raises(ConfigError, match="interval_s: Input should be greater") as err:
        load_config(path, {})
    assert err.value.fix == "see `autoballoon run --help`, --interval"
