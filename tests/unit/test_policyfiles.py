"""Policy files and `autoballoon check-policy`."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from autoballoon.cli import main
from autoballoon.core.policy import AmbiguousPolicy, GuestPolicy, HostPolicy
from autoballoon.policyfiles import PolicyFileError, load_policy_dir

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "policies").rglob("*.toml"))


def test_shipped_default_file_states_the_built_in_defaults() -> None:
    doc = tomllib.loads((REPO / "policies" / "default.toml").read_text())
    assert GuestPolicy.model_validate(doc["policy"]) == GuestPolicy()
    assert HostPolicy.model_validate(doc["host"]) == HostPolicy()


def test_shipped_default_file_comments_end_with_the_field_docs() -> None:
    # Each field's comment block in default.toml ends with the field's docstring, word for
    # word (a block may begin with more, like the file's header before `mode`).
    text = (REPO / "policies" / "default.toml").read_text()
    fields = GuestPolicy.model_fields | HostPolicy.model_fields
    seen = set()
    comment: list[str] = []
    for line in text.splitlines():
        unset = line.startswith("# ") and line.endswith("(unset)")  # "# max_mib =   (unset)"
        if line.startswith("#") and not unset:
            comment.append(line.lstrip("# "))
            continue
        name = line.split("=")[0].lstrip("# ").strip()
        if name in fields:
            doc = " ".join((fields[name].description or "").split())
            assert " ".join(" ".join(comment).split()).endswith(doc), name
            seen.add(name)
        comment = []
    assert seen == set(fields)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_check_policy_accepts_every_shipped_file(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-policy", "--no-strict-modes", str(path)]) == 0
    assert "ok:" in capsys.readouterr().out


def test_check_policy_accepts_the_shipped_directory() -> None:
    assert main(["check-policy", "--no-strict-modes", str(REPO / "policies")]) == 0


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(0o644)
    return path


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param("[policy]\nheadroom_mib = -5\n", "headroom_mib", id="negative"),
        pytest.param("[policy]\nheadroom_mb = 5\n", "headroom_mb", id="typo-field"),
        pytest.param('[policy]\nmode = "greedy"\n', "mode", id="bad-enum"),
        pytest.param("[policy]\nlow_water_mib = 500\n", "low_water_mib", id="incoherent"),
        pytest.param("[policy\n", "not valid TOML", id="syntax"),
        pytest.param("[match]\nnames = []\n[policy]\n", "match", id="empty-match"),
        pytest.param(
            "[match]\nnames = ['x']\n[host]\nreserve_mib = 1\n",
            "[host] belongs",
            id="host-in-per-vm",
        ),
        pytest.param(
            "[match]\nnames = ['x']\n[policy]\nfloor_mib = 'lots'\n", "floor_mib", id="per-vm-type"
        ),
    ],
)
def test_check_policy_names_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    path = write(tmp_path, "broken.toml", text)
    assert main(["check-policy", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err
    assert needle in err


def test_world_writable_policy_is_refused_unless_overridden(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    path = write(tmp_path, "default.toml", "[policy]\nmode = 'proactive'\n")
    os.chmod(path, 0o666)
    with pytest.raises(PolicyFileError, match="chmod go-w"):
        load_policy_dir(tmp_path)
    assert load_policy_dir(tmp_path, strict_modes=False).default.mode == "proactive"


def test_precedence_default_then_glob_then_exact(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    write(tmp_path, "default.toml", "[policy]\nfloor_mib = 200\npriority = 10\n")
    write(
        tmp_path,
        "web.toml",
        "[match]\nnames = ['web-*']\n[policy]\npriority = 20\nfloor_mib = 300\n",
    )
    write(tmp_path, "web1.toml", "[match]\nnames = ['web-1']\n[policy]\npriority = 30\n")
    pset = load_policy_dir(tmp_path)
    assert pset.resolve("db")[0].priority == 10
    assert pset.resolve("web-2")[0].priority == 20
    web1, sources = pset.resolve("web-1")
    assert (web1.priority, web1.floor_mib) == (30, 300)
    assert [Path(s).name for s in sources] == ["default.toml", "web.toml", "web1.toml"]


def test_ambiguous_match_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tmp_path.chmod(0o755)
    write(tmp_path, "a.toml", "[match]\nnames = ['web-*']\n")
    write(tmp_path, "b.toml", "[match]\nnames = ['*-1']\n")
    with pytest.raises(AmbiguousPolicy, match="a.toml, .*b.toml"):
        load_policy_dir(tmp_path).resolve("web-1")
    assert main(["check-policy", "--policies", str(tmp_path), "--explain", "web-1"]) == 1
    assert "more than one policy file" in capsys.readouterr().err


def test_explain_prints_effective_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path.chmod(0o755)
    write(tmp_path, "default.toml", "[policy]\nmode = 'proactive'\n")
    write(tmp_path, "db.toml", "[match]\nuuids = ['ABC']\n[policy]\nfloor_mib = 999\n")
    assert (
        main(["check-policy", "--policies", str(tmp_path), "--explain", "x", "--uuid", "abc"]) == 0
    )
    out = capsys.readouterr().out
    doc = tomllib.loads(out)
    assert doc["policy"]["floor_mib"] == 999 and doc["policy"]["mode"] == "proactive"
    assert "db.toml" in out
