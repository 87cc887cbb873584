"""The paired-twin instrument (``benchmarks.lab.pg``), end to end on real guests, briefly.

Two small PostgreSQL twins boot, warm and run pgbench together; one is held at a fixed balloon
size, the other is left alone. The figures themselves mean nothing in 60 s; what is checked is
that the instrument measures what it says: both twins over the same seconds, the treated one
really at its size and giving memory back to the host, the untouched twin untouched, and every
column of the report (TPS, p99, disk reads, memory PSI, OOM kills) read from the guests.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.lab import pg, pg_report

pytestmark = pytest.mark.lab

MEM_MIB = 512
SIZE_MIB = 384


def test_a_fixed_size_pair_measures_both_twins_over_the_same_seconds(
        lab_locked: None, tmp_path: Path) -> None:
    raw = pg.run_pair(pg.size_arm(SIZE_MIB), 1, MEM_MIB, measure_s=60, short_mib=0,
                      warm_timeout_s=240)
    assert raw["treated"] == pg.TWINS[1] and raw["twin"] == pg.TWINS[0], "odd pairs treat b"
    s = pg_report.summarize(raw)
    tr, tw = s["treated"], s["twin"]
    assert tr["balloon_end_mib"] == pytest.approx(SIZE_MIB, abs=1)
    assert tw["balloon_end_mib"] == pytest.approx(MEM_MIB, abs=1)
    # the treated guest had touched its memory (warm), so the host got pages back
    assert s["returned_mib"] > 32, s
    assert tw["returned_mib"] < 32, tw
    for g in (tr, tw):
        assert g["alive"] and g["oom_kills"] == 0, g
        assert g["intervals"] >= 2 and g["tps"] > 0, g
        assert g["psi_some_pct"] is not None and g["psi_full_pct"] is not None, g
        assert 0 <= g["psi_some_pct"] <= 100
        assert math.isfinite(g["reads_per_tx"]) and g["reads_per_tx"] >= 0
    assert math.isfinite(s["tps_ratio"]) and math.isfinite(s["p99_ratio"])
    # the raw pair survives the round trip and renders
    pg.save(raw, tmp_path / "raw")
    runs = pg.load_all(tmp_path / "raw")
    assert len(runs) == 1
    written = pg_report.write(runs, tmp_path)
    assert {p.name for p in written} == {"pg.md", "frontier.md", "frontier.png"}
    assert f"| {SIZE_MIB} | 1 |" in (tmp_path / "frontier.md").read_text()
