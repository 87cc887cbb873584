"""The README's benchmark tables equal what benchmarks/results/*.md hold.

The tables are generated (`python -m benchmarks.readme_figures --write`); these tests fail when
someone reruns a benchmark and forgets to regenerate, or edits a figure by hand.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from benchmarks import readme_figures as rf

FIX = "run `python -m benchmarks.readme_figures --write` and commit README.md"


@pytest.mark.parametrize("name", sorted(rf.BLOCKS))
def test_readme_tables_equal_the_results_files(name: str) -> None:
    readme = rf.README.read_text()
    assert rf.block_in(readme, name) == rf.BLOCKS[name](rf.RESULTS), f"README drifted: {FIX}"


def test_the_tables_quote_the_results_files() -> None:
    bench = rf.figures_table()
    lab = rf.lab_table()

    def rows(table: str) -> int:
        return sum(ln.startswith("|") and not ln.startswith("|---") for ln in table.splitlines())

    # Header + one row per figure: core, replay, adapter, slow ticks, footprint, soak; lab:
    # 3 scenarios x 2 modes.
    assert rows(bench) == 1 + 6
    assert rows(lab) == 1 + 6
    # Spot checks read the files another way (plain regexes) than the generator does.
    core = (rf.RESULTS / "core.md").read_text()
    per_tick = re.search(r"^\| 1000 \| ([\d.]+) \|", core, re.M)
    assert per_tick is not None
    assert f"{per_tick.group(1)} ms CPU per tick" in bench
    replay = (rf.RESULTS / "replay.md").read_text()
    wall = re.search(r"replay \(proactive\): exit 0, wall ([\d.]+) s", replay)
    assert wall is not None
    assert f"{wall.group(1)} s wall" in bench
    index = (rf.RESULTS / "index.md").read_text()
    total = re.search(r"total wall time ([\d.]+) min", index)
    assert total is not None
    assert f"took {total.group(1)} minutes" in lab


def test_a_changed_result_makes_the_readme_check_fail(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(rf.RESULTS, results)
    core = results / "core.md"
    text, n = re.subn(r"^\| 1000 \| [0-9.]+ \|", "| 1000 | 31.5 |", core.read_text(), flags=re.M)
    assert n == 1, "the 1,000-guest row of core.md"
    core.write_text(text)
    table = rf.figures_table(results)
    assert "31.5 ms CPU per tick" in table
    assert rf.block_in(rf.README.read_text(), "bench") != table
    # --write brings the README back in line with the new results.
    rewritten = rf.rewrite(rf.README.read_text(), results)
    assert rf.block_in(rewritten, "bench") == table
    assert rf.block_in(rewritten, "lab") == rf.lab_table(results)


def test_a_results_file_without_the_figure_is_a_clear_error(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(rf.RESULTS, results)
    soak = results / "soak.md"
    soak.write_text(soak.read_text().replace("balloon changes made", "changes"))
    with pytest.raises(rf.FiguresError, match=r"results/soak.md: no match for .*balloon changes"):
        rf.figures_table(results)
    (results / "lab.md").unlink()
    with pytest.raises(rf.FiguresError, match=r"lab.md missing: run `make bench`"):
        rf.lab_table(results)
