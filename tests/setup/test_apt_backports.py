"""Host set-up: the bookworm-backports entry derived from either apt source format.

Runs the real `contrib/lab/setup-host.sh --backports-only` against fixture apt directories
(AB_APT_DIR), so no root and no change to this host. Where apt-get exists, apt itself reads the
result back: the derived entry must make apt fetch bookworm-backports from the same mirror with
the same components.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "contrib" / "lab" / "setup-host.sh"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MIRROR = "http://mirror.invalid/debian/"

ONE_LINE = f"""\
# written by the installer
deb cdrom:[Debian_GNU/Linux_12.5.0_Bookworm]/ bookworm main
deb [arch=amd64 signed-by={KEYRING}] {MIRROR} bookworm main non-free-firmware
deb-src [signed-by={KEYRING}] {MIRROR} bookworm main
# deb {MIRROR} bookworm-backports main
deb [signed-by={KEYRING}] {MIRROR} bookworm-updates main non-free-firmware
deb http://security.invalid/debian-security bookworm-security main
"""

DEB822 = f"""\
Types: deb deb-src
# a comment inside the stanza
URIs: {MIRROR}
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: {KEYRING}

Types: deb
URIs: http://security.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: {KEYRING}

Enabled: no
Types: deb
URIs: {MIRROR}
Suites: bookworm-backports
Components: main
"""


def setup_backports(apt_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AB_APT_DIR=str(apt_dir))
    return subprocess.run(
        ["bash", str(SETUP), "--backports-only"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def apt_dir_with(tmp_path: Path, files: dict[str, str]) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (apt / name).write_text(text)
    return apt


def assert_apt_fetches_backports(apt_dir: Path, *components: str) -> None:
    """apt itself, given this sources configuration, would fetch backports from MIRROR."""
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get not available to read the sources back")
    (apt_dir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        ["apt-get", "-o", f"Dir::Etc={apt_dir}", "-o", f"Dir::State::Lists={apt_dir}/lists",
         "-o", "APT::Architecture=amd64", "-o", "APT::Architectures=amd64",
         "--print-uris", "update"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "E:" not in out.stderr, out.stderr
    fetched = [line.split("'")[1] for line in out.stdout.splitlines() if line.startswith("'")]
    for comp in components:
        assert f"{MIRROR}dists/bookworm-backports/{comp}/binary-amd64/Packages.xz" in fetched


def test_one_line_sources_list_gets_a_one_line_backports_entry(tmp_path: Path) -> None:
    apt = apt_dir_with(tmp_path, {"sources.list": ONE_LINE})
    run = setup_backports(apt)
    assert run.returncode == 0, run.stderr
    out = apt / "sources.list.d" / "ab-lab-bookworm-backports.list"
    assert out.read_text() == (
        f"deb [arch=amd64 signed-by={KEYRING}] {MIRROR} bookworm-backports main non-free-firmware\n"
    )
    assert f"added bookworm-backports: wrote {out}" in run.stdout
    assert "one-line entry" in run.stdout
    assert_apt_fetches_backports(apt, "main", "non-free-firmware")


def test_deb822_sources_get_a_deb822_backports_entry(tmp_path: Path) -> None:
    apt = apt_dir_with(tmp_path, {"sources.list.d/debian.sources": DEB822})
    run = setup_backports(apt)
    assert run.returncode == 0, run.stderr
    out = apt / "sources.list.d" / "ab-lab-bookworm-backports.sources"
    assert out.read_text() == (
        f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm-backports\nComponents: main contrib\n"
        f"Signed-By: {KEYRING}\n"
    )
    assert "deb822 entry" in run.stdout
    assert_apt_fetches_backports(apt, "main", "contrib")
    # The disabled backports stanza in the fixture did not count as present.
    assert "already" not in run.stdout


def test_entries_under_sources_list_d_in_one_line_format_are_used(tmp_path: Path) -> None:
    apt = apt_dir_with(tmp_path, {"sources.list.d/mirror.list": f"deb {MIRROR} bookworm main\n"})
    run = setup_backports(apt)
    assert run.returncode == 0, run.stderr
    out = apt / "sources.list.d" / "ab-lab-bookworm-backports.list"
    assert out.read_text() == f"deb {MIRROR} bookworm-backports main\n"


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    apt = apt_dir_with(tmp_path, {"sources.list": ONE_LINE})
    assert setup_backports(apt).returncode == 0
    before = {p.name: p.read_text() for p in (apt / "sources.list.d").iterdir()}
    again = setup_backports(apt)
    assert again.returncode == 0, again.stderr
    assert "bookworm-backports already in" in again.stdout
    assert {p.name: p.read_text() for p in (apt / "sources.list.d").iterdir()} == before


def test_an_existing_backports_entry_is_kept_as_is(tmp_path: Path) -> None:
    own = f"deb {MIRROR} bookworm-backports main\n"
    apt = apt_dir_with(tmp_path, {"sources.list": ONE_LINE + own})
    run = setup_backports(apt)
    assert run.returncode == 0, run.stderr
    assert f"bookworm-backports already in {apt / 'sources.list'}" in run.stdout
    assert list((apt / "sources.list.d").iterdir()) == []


def test_no_plain_bookworm_entry_is_a_clear_error(tmp_path: Path) -> None:
    apt = apt_dir_with(tmp_path, {"sources.list": "# deb http://x.invalid/debian bookworm main\n"})
    run = setup_backports(apt)
    assert run.returncode == 1
    assert "no enabled 'deb' entry for suite 'bookworm'" in run.stdout
    assert "add bookworm-backports to apt by hand" in run.stdout
    assert "ERROR: could not add bookworm-backports" in run.stderr
    assert list((apt / "sources.list.d").iterdir()) == []
