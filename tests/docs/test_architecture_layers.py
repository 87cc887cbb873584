"""docs/architecture.md's layers are pyproject.toml's, and every module is under a contract.

The layers contract of import-linter (``[[tool.importlinter.contracts]]`` with ``type =
"layers"``) is the truth; the numbered list under "## The layers" must name the same layers in
the same order, each item starting with its modules in backquotes joined by ``|``, then a colon.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "autoballoon"
DOC = REPO / "docs" / "architecture.md"
ITEM = re.compile(r"^\d+\. ((?:`[\w.]+`(?:\s+\|\s+)?)+):", re.M)


def contracts() -> list[dict[str, Any]]:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    found: list[dict[str, Any]] = doc["tool"]["importlinter"]["contracts"]
    return found


def pyproject_layers() -> list[set[str]]:
    (layers,) = [c["layers"] for c in contracts() if c["type"] == "layers"]
    return [{name.strip() for name in layer.split("|")} for layer in layers]


def doc_layers() -> list[set[str]]:
    text = DOC.read_text()
    section = text.split("\n## The layers\n", 1)[1].split("\n## ", 1)[0]
    items = ITEM.findall(re.sub(r"\n +", " ", section))  # an item's continuation lines joined
    return [set(re.findall(r"`([\w.]+)`", item)) for item in items]


def modules() -> list[str]:
    """Every module of the package, the root package's own ``__init__`` aside."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if len(parts) > 1:
            names.append(".".join(parts))
    return names


def under(module: str, names: set[str]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in names)


def test_the_doc_lists_pyprojects_layers_in_order() -> None:
    assert doc_layers() == pyproject_layers()


def test_every_module_is_under_a_contract() -> None:
    """In a layer, or a source module of another contract (the root package itself, which
    holds every module, does not count)."""
    covered = set().union(*pyproject_layers())
    for contract in contracts():
        covered |= set(contract.get("source_modules", [])) - {"autoballoon"}
    outside = [m for m in modules() if not under(m, covered)]
    assert not outside, f"modules under no import-linter contract: {outside}"


def test_no_two_modules_share_a_file_name() -> None:
    """A file name says which module it is (``status.py`` the status file, the command that
    reads it ``commands/status_command.py``), packages' ``__init__.py`` aside."""
    seen: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name != "__init__.py":
            seen.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert not {name: paths for name, paths in seen.items() if len(paths) > 1}


def test_the_check_sees_every_module() -> None:
    assert "autoballoon.core.decide" in modules()
    assert "autoballoon.backends.libvirt" in modules()
    assert not under("autoballoon.daemonic", {"autoballoon.daemon"})


NOT_YET = {"autoballoon/backends/qmp_socket.py", "backends/qmp.py"}
"""Files the worked examples name as ones to write (or not to)."""


def test_every_python_file_the_doc_names_exists() -> None:
    """A path is from the repository or from autoballoon/; a bare name is a file somewhere in
    autoballoon/ or tests/."""
    named = set(re.findall(r"`([\w/]+\.py)`", DOC.read_text())) - NOT_YET
    names = {p.name for d in (PACKAGE, REPO / "tests") for p in d.rglob("*.py")}

    def exists(path: str) -> bool:
        if "/" not in path:
            return path in names
        return (REPO / path).is_file() or (PACKAGE / path).is_file()

    assert not sorted(p for p in named if not exists(p))
