"""Print autoballoon's dependencies from pyproject.toml, one per line, for pip.

    python contrib/deps.py --without libvirt-python --extra dev

The Makefile's venv without libvirt-python (`make unit` and `make lint` on a machine without
libvirt's headers) installs the package with ``--no-deps`` and then these, so the list of
dependencies stays in one place. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def name_of(requirement: str) -> str:
    """The distribution name of a requirement ("libvirt-python>=9.0,<13" -> "libvirt-python")."""
    m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    return "" if m is None else m.group().lower().replace("_", "-")


def requirements(pyproject: Path, without: set[str], extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    skip = {name_of(w) for w in without}
    return [r for r in reqs if name_of(r) not in skip]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--without", action="append", default=[], metavar="NAME")
    ap.add_argument("--extra", action="append", default=[], metavar="EXTRA")
    args = ap.parse_args(argv)
    print("\n".join(requirements(PYPROJECT, set(args.without), args.extra)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
