"""`make unit` and `make lint` need no root and touch nothing outside the checkout: neither they
nor anything they make (prerequisites, or targets their recipes run with `$(MAKE)`) reaches the
lab's set-up (`host`, `setup`, contrib/lab/setup-host.sh). `make test` and `make demo` do set up.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def rules() -> dict[str, tuple[list[str], list[str]]]:
    """target -> (prerequisites, recipe lines), with $(VAR) names expanded."""
    text = MAKEFILE.read_text()
    variables = dict(re.findall(r"^(\w+)\s*[:?]?=\s*(.*)$", text, re.M))

    def expand(s: str) -> str:
        for _ in range(5):  # variables made of variables: $(STAMP) is $(VENV)/.installed
            s = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group()), s)
        return s

    out: dict[str, tuple[list[str], list[str]]] = {}
    target = None
    for line in text.splitlines():
        if line.startswith("\t") and target is not None:
            out[target][1].append(expand(line))
            continue
        m = re.match(r"^([^\s:#=.][^:=]*):(?!=)(.*)$", line)
        target = None
        if m:
            for t in expand(m.group(1)).split():
                out[t] = (expand(m.group(2)).split(), [])
                target = t
    return out


def reached(goal: str) -> tuple[set[str], list[str]]:
    """The targets `make goal` may build and the recipe lines it may run."""
    table = rules()
    seen: set[str] = set()
    lines: list[str] = []
    todo = [goal]
    while todo:
        t = todo.pop()
        if t in seen or t not in table:
            continue
        seen.add(t)
        prereqs, recipe = table[t]
        lines += recipe
        todo += prereqs
        for line in recipe:
            todo += re.findall(r"\$\(MAKE\)(?:\s+--?[\w-]+)*\s+([\w./-]+)", line)
    return seen, lines


@pytest.mark.parametrize("goal", ["unit", "lint"])
def test_cheap_targets_never_set_up_the_host(goal: str) -> None:
    targets, recipe = reached(goal)
    assert {"host", "setup", "pg-image"}.isdisjoint(targets), targets
    assert not [x for x in recipe if "setup-host.sh" in x or "sudo" in x or "apt" in x], recipe


@pytest.mark.parametrize("goal", ["test", "demo", "lab-tests", "bench"])
def test_lab_targets_do_set_up(goal: str) -> None:
    targets, recipe = reached(goal)
    assert "host" in targets and any("setup-host.sh" in x for x in recipe)


def test_the_parser_sees_the_venv_stamps() -> None:
    targets, _ = reached("unit")
    assert {"venv-any", ".venv/.installed", ".venv/.installed-nolibvirt"} <= targets
