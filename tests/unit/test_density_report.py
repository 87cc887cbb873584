"""The density benchmark's summary and report (``benchmarks.lab.density``), on made-up runs.

Pure: a cell's runs are counted as holding or not against the median of the uncapped runs, and
the disk-read and PSI columns come from each guest's samples and reports.
"""

from __future__ import annotations

from typing import Any

from benchmarks.lab import density

T_BOOT = 2_000_000.0
T0 = T_BOOT + 100
MEASURE_S = 150.0
MACHINE = {"nproc": "2", "cpu": "x", "ram": "1 GiB", "kernel": "k", "python": "3",
           "date": "2026-12-05 00:00 UTC", "commit": "abc1234"}
NAMES = density.names()


def run(mode: str, ratio: float | None, index: int, tps: float, lost: bool = False,
        guest_oom: int = 0) -> dict[str, Any]:
    ts = [T0 + 2 * i for i in range(int(MEASURE_S / 2) + 1)]

    def guest_row(name: str, i: int) -> dict[str, Any]:
        if lost and name == NAMES[1] and i > 10:
            return {"running": False}
        return {"running": True, "qemu_rss": 1200 * 1024, "ram_rss": 1000 * 1024,
                "balloon": 900 * 1024, "rd_req": 2 * tps * 2 * i, "rd_bytes": 0}

    samples = [{"t": t, "cg_usage": 0, "cg_limit": 0, "cg_failcnt": 0, "cg_oom_kill": 0,
                "guests": {n: guest_row(n, i) for n in NAMES}} for i, t in enumerate(ts)]
    guests = {n: {"oom_kill": guest_oom if n == NAMES[0] else 0,
                  "pg": [{"t": T0 + 5 * i, "interval": 5, "tx": tps * 5, "p99_ms": 100.0,
                          "p50_ms": 40.0} for i in range(int(MEASURE_S / 5))],
                  "pg_all": [],
                  "reports": [{"t": t, "psi_some_total": 10_000 * (t - T0),
                               "psi_full_total": 0} for t in ts]}
              for n in NAMES}
    return {"mode": mode, "ratio": ratio, "limit_mib": None if ratio is None else 1765,
            "run": index, "overhead_mib": 200, "warm_s": density.DEFAULT_WARM_S,
            "measure_s": MEASURE_S, "interval_s": 2.0, "boot_s": 10.0, "t_boot": T_BOOT,
            "t0": T0, "t1": T0 + MEASURE_S, "samples": samples,
            "lost": {NAMES[1]: T0 + 30} if lost else {}, "cg_end": {"cg_failcnt": 0},
            "kernel_oom_kills_s": [30.0] if lost else [], "guests": guests, "others": [],
            "daemon_changes": {}, "machine": MACHINE}


def test_disk_reads_and_psi_per_run() -> None:
    s = density.summarize(run("nolimit", None, 0, 50.0))
    assert s["reads_per_tx"] == 2.0
    assert s["psi_some_pct"] == 1.0
    lost = density.summarize(run("fpr", 1.5, 0, 50.0, lost=True))
    assert lost["lost"] == 1
    assert lost["reads_per_tx"] is None, "a lost guest has no figure, so the run has none"


def test_cells_count_the_runs_that_hold_against_the_uncapped_median() -> None:
    runs = [run("nolimit", None, i, tps) for i, tps in enumerate((50.0, 60.0, 55.0))]
    # against a 110 TPS baseline (both guests at the median 55): 102 holds, 96 does not
    runs += [run("autoballoon", 1.5, 0, 51.0), run("autoballoon", 1.5, 1, 48.0),
             run("autoballoon", 1.5, 2, 52.0, lost=True)]
    runs += [run("fpr", 1.5, 0, 55.0, guest_oom=1)]
    text = density.render(runs)
    cells = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()
             if line.startswith("| ") and " | " in line}
    assert "| baseline |" in cells["nolimit"]
    assert "| 1/3 |" in cells["autoballoon x1.5"]
    assert "| 0/1 |" in cells["fpr x1.5"]
    assert "(3 run(s): 110.0 TPS" in text
    assert "autoballoon x1.5 #2" in text
