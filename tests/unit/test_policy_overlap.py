"""Policy files whose matches overlap are refused when the directory loads, naming both files,
both patterns and a guest name they share; `check-policy --uri` checks the policies against
the running guests (libvirt's test driver) and states the custom-monitor taint."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from autoballoon.cli import main
from autoballoon.core.policy import common_name
from autoballoon.policyfiles import OverlappingPolicies, PolicyFileError, load_policy_dir


@pytest.mark.parametrize(
    ("a", "b", "shared"),
    [
        ("web-*", "*-1", True),
        ("web-*", "db-*", False),
        ("a*b", "*c", False),
        ("[abc]x*", "[!a]*", True),
        ("db[0-9]", "db?", True),
        ("db[0-9]", "db[a-z]", False),
        ("*prod*", "*stage*", True),
        ("web-?", "web-??", False),
        ("*", "anything", True),
        ("[", "[", True),  # an unclosed [ is a literal
        ("x[]]", "x]", True),  # a first "]" is in the class
        ("x[!]]", "x]", False),
    ],
)
def test_two_globs_share_a_name_exactly_when_one_exists(a: str, b: str, shared: bool) -> None:
    name = common_name(a, b)
    assert (name is not None) == shared
    if name is not None:
        assert fnmatch.fnmatchcase(name, a) and fnmatch.fnmatchcase(name, b)


def write(d: Path, name: str, text: str) -> None:
    (d / name).write_text(text)


def test_overlapping_globs_are_refused_naming_both_files_and_a_guest(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", "[match]\nnames = ['web-*']\n")
    write(tmp_path, "b.toml", "[match]\nnames = ['*-prod']\n")
    write(tmp_path, "c.toml", "[match]\nnames = ['db-[0-9]']\n")
    with pytest.raises(OverlappingPolicies) as err:
        load_policy_dir(tmp_path, strict_modes=False)
    assert isinstance(err.value, PolicyFileError)
    msg = str(err.value)
    assert "a.toml ('web-*') and" in msg and "b.toml ('*-prod') both match guest 'web-prod'" in msg
    assert "c.toml" not in msg


def test_the_same_exact_name_in_two_files_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", "[match]\nnames = ['db1']\n")
    write(tmp_path, "b.toml", "[match]\nnames = ['db1', 'db2']\n")
    with pytest.raises(OverlappingPolicies, match="both match guest 'db1'.*exact name"):
        load_policy_dir(tmp_path, strict_modes=False)


def test_an_exact_name_inside_another_files_glob_is_fine(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", "[match]\nnames = ['web-*']\n")
    write(tmp_path, "b.toml", "[match]\nnames = ['web-1']\n")
    assert len(load_policy_dir(tmp_path, strict_modes=False).layers) == 2


def test_check_policy_fails_on_overlap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "a.toml", "[match]\nnames = ['te*']\n")
    write(tmp_path, "b.toml", "[match]\nnames = ['*st']\n")
    assert main(["check-policy", "--policies", str(tmp_path), "--no-strict-modes"]) == 1
    assert "both match guest 'test'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("config", "policy", "expect", "code"),
    [
        ("", "", "test  managed: mode on-demand", 0),
        ("exclude = ['test']", "", "test  LEFT UNMANAGED: excluded by the config", 0),
        ("", "[policy]\nenabled = false\n", "LEFT UNMANAGED: opted out (enabled = false)", 0),
    ],
)
def test_check_policy_against_the_running_guests_states_each_and_the_taint(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    config: str,
    policy: str,
    expect: str,
    code: int,
) -> None:
    policies = tmp_path / "p"
    policies.mkdir()
    write(policies, "default.toml", policy)
    write(tmp_path, "c.toml", f"[daemon]\n{config}\n")
    args = ["check-policy", "--policies", str(policies), "--no-strict-modes"]
    args += ["--uri", "test:///default", "--config", str(tmp_path / "c.toml")]
    assert main(args) == code
    out = capsys.readouterr().out
    assert "running guests on test:///default: 1" in out and expect in out
    assert "tainted custom-monitor" in out and 'extended_stats = "off"' in out
    assert "22 OOM kills" in out  # the cost, from benchmarks/results/lab.md


def test_check_policy_with_extended_stats_off_says_no_taint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p").mkdir()
    write(tmp_path, "c.toml", "[daemon]\nextended_stats = 'off'\n")
    args = ["check-policy", "--policies", str(tmp_path / "p"), "--no-strict-modes"]
    assert main([*args, "--uri", "test:///default", "--config", str(tmp_path / "c.toml")]) == 0
    assert "taint: none" in capsys.readouterr().out


def test_the_taint_figures_are_the_benchmarks() -> None:
    lab = (Path(__file__).resolve().parents[2] / "benchmarks/results/lab.md").read_text()
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in lab.splitlines()}
    off, qmp = rows[("spike-large", "off")].split("|"), rows[("spike-large", "qmp")].split("|")
    assert (off[6].strip(), off[7].strip()) == ("22", "870")
    assert (qmp[6].strip(), qmp[7].strip()) == ("2", "140")
    assert rows[("thrash-t512", "off")].split("|")[7].strip() == "1424"
    assert rows[("thrash-t512", "qmp")].split("|")[7].strip() == "22"
