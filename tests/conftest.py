"""Marks the tests that need libvirt-python: ``libvirt``.

They are every test under tests/plumbing, tests/operator and tests/lab (they drive libvirt's
test driver or the lab; tests/operator's conftest imports libvirt), and every test module whose
source imports libvirt, the libvirt adapter or the lab (contrib.lab, benchmarks.common,
benchmarks.lab), or opens a libvirt URI, or imports another test module that does.

`make test` runs all of them. `make unit` deselects them (``-m "not lab and not libvirt"``) when
the venv has no libvirt-python (a machine without libvirt's headers). There, modules that would
fail to import are not even collected, but only when the ``-m`` expression deselects
``libvirt``: a plain ``pytest`` without libvirt-python still fails loudly.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
LIBVIRT_DIRS = ("plumbing", "operator", "lab")
NEEDS_LIBVIRT = re.compile(
    r"^\s*(import libvirt|from libvirt|from autoballoon\.backends|"
    r"from autoballoon\.commands\.wiring|from contrib\.lab|from benchmarks\.(common|lab))"
    r"|(qemu|test):///",
    re.M,
)
TEST_IMPORT = re.compile(r"^\s*from (tests(?:\.\w+)+) import", re.M)
HAVE_LIBVIRT = importlib.util.find_spec("libvirt") is not None


def needs_libvirt(path: Path) -> bool:
    """Whether the tests in ``path`` (a file or a directory under tests/) need libvirt-python."""
    return _needs_libvirt(path.resolve())


@cache
def _needs_libvirt(path: Path) -> bool:
    try:
        rel = path.relative_to(TESTS)
    except ValueError:
        return False
    if rel.parts and rel.parts[0] in LIBVIRT_DIRS:
        return True
    if path.suffix != ".py" or not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    if NEEDS_LIBVIRT.search(text):
        return True
    for module in TEST_IMPORT.findall(text):
        other = TESTS.parent.joinpath(*module.split(".")).with_suffix(".py")
        if other != path and _needs_libvirt(other):
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if HAVE_LIBVIRT or "not libvirt" not in (config.getoption("markexpr") or ""):
        return None
    return True if needs_libvirt(collection_path) else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if needs_libvirt(Path(item.path)):
            item.add_marker(pytest.mark.libvirt)
