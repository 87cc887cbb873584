"""The twins benchmark's arithmetic (``benchmarks.lab.pg_report``), on made-up pairs.

Pure: ratios over the same seconds, the A/A noise floor, the knee of the frontier, and the
verdicts that may only claim what the floor allows.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.lab import pg_report

T0 = 1_000_000.0
MEASURE_S = 150.0
MACHINE = {"nproc": "2", "cpu": "x", "ram": "1 GiB", "kernel": "k", "python": "3",
           "date": "2026-12-05 00:00 UTC", "commit": "abc1234"}


def twin(tps: float, p99: float, rss_start_mib: float, rss_end_mib: float, balloon_mib: float,
         reads_per_tx: float = 1.0, psi_some_us_per_s: float = 0.0) -> dict[str, Any]:
    ts = [T0 + 2 * i for i in range(int(MEASURE_S / 2) + 1)]
    n = len(ts) - 1
    samples = [{"t": t, "qemu_rss": 0, "balloon": balloon_mib * 1024,
                "ram_rss": 1024 * (rss_start_mib + (rss_end_mib - rss_start_mib) * i / n),
                "host_avail": 0, "rd_req": reads_per_tx * tps * (t - T0),
                "rd_bytes": 4096 * reads_per_tx * tps * (t - T0)}
               for i, t in enumerate(ts)]
    reports = [{"t": t, "Buffers": 500 * 1024, "Cached": 300 * 1024, "MemFree": 100 * 1024,
                "oom_kill": 0, "psi_some_total": psi_some_us_per_s * (t - T0),
                "psi_full_total": 0} for t in ts]
    pgr = [{"t": T0 + 5 * i, "interval": 5, "tx": tps * 5, "p99_ms": p99, "p50_ms": p99 / 2}
           for i in range(int(MEASURE_S / 5))]
    return {"samples": samples, "reports": reports, "pg": pgr, "alive_at_end": True}


def pair(arm: str, n: int, tps_ratio: float, p99_ratio: float = 1.0, back_mib: float = 0.0,
         size: int | None = None) -> dict[str, Any]:
    treated, other = ("a", "b") if n % 2 == 0 else ("b", "a")
    return {
        "arm": arm, "pair": n, "what": arm, "machine": MACHINE, "mem_mib": 1024,
        "measure_s": MEASURE_S, "size_mib": size, "short_mib": 0, "reserve_mib": 0,
        "treated": treated, "twin": other, "t0": T0, "t1": T0 + MEASURE_S, "events": [],
        "guests": {treated: twin(100 * tps_ratio, 50 * p99_ratio, 1000, 1000 - back_mib,
                                 1024 - back_mib, psi_some_us_per_s=20_000),
                   other: twin(100, 50, 1000, 1000, 1024)},
    }


def test_ratios_are_the_treated_guest_over_its_twin_in_the_same_window() -> None:
    s = pg_report.summarize(pair("size-512", 1, 0.8, 1.5, back_mib=400, size=512))
    assert s["treated_name"] == "b"
    assert s["tps_ratio"] == pytest.approx(0.8)
    assert s["p99_ratio"] == pytest.approx(1.5)
    assert s["returned_mib"] == pytest.approx(400)
    assert s["returned_pct"] == pytest.approx(100 * 400 / 900)
    assert s["treated"]["reads_per_tx"] == pytest.approx(1.0, rel=0.05)
    assert s["treated"]["psi_some_pct"] == pytest.approx(2.0)
    assert s["twin"]["psi_some_pct"] == pytest.approx(0.0)


def test_the_noise_floor_is_the_widest_aa_departure() -> None:
    sums = [pg_report.summarize(pair("none", i, r)) for i, r in enumerate((0.97, 1.06, 0.99))]
    floor = pg_report.noise_floor(pg_report.by_arm(sums))
    assert floor is not None
    assert floor["tps"] == pytest.approx(0.06)
    assert floor["pairs"] == 3


def test_the_knee_is_the_smallest_size_meeting_both_targets() -> None:
    runs = [pair("none", 0, 1.0), pair("none", 1, 1.0)]
    for size, ratio, p99 in ((896, 1.0, 1.0), (768, 0.97, 1.1), (640, 0.90, 1.1),
                             (512, 0.99, 1.0), (448, 0.80, 1.0)):
        runs += [pair(f"size-{size}", i, ratio, p99, back_mib=1024 - size, size=size)
                 for i in (0, 1)]
    arms = pg_report.by_arm([pg_report.summarize(r) for r in runs])
    pts = pg_report.frontier_points(arms)
    assert [p[0] for p in pts] == [1024, 896, 768, 640, 512, 448]
    k = pg_report.knee(pts)
    assert k is not None and k[0] == 512
    assert pg_report.misses_above(pts, k) == [640], "a larger size that missed is named"


def test_a_p99_miss_is_no_knee() -> None:
    runs = [pair("none", 0, 1.0), pair("size-896", 0, 1.0, 1.3, 128, 896)]
    arms = pg_report.by_arm([pg_report.summarize(r) for r in runs])
    k = pg_report.knee(pg_report.frontier_points(arms))
    assert k is not None and k[0] == 1024


@pytest.mark.parametrize(("floor_tps", "ratios", "expected"), [
    (0.03, (0.97, 0.98, 0.96), "TPS within 5% in every pair"),
    (0.10, (0.97, 0.98, 0.96), "TPS harm not detectable (median inside the ±10% floor)"),
    (0.07, (1.26, 0.99, 0.75),
     "TPS harm not detectable (median inside the ±7% floor), but 1 of 3 pairs beyond it "
     "(worst 0.75)"),
    (0.03, (0.93, 0.94, 0.96), "TPS -6%: HARM beyond the ±3% floor"),
    (0.03, (0.96, 0.95, 0.99), "TPS within 5% in every pair"),
    (0.01, (0.96, 0.97, 0.93), "TPS -4%: beyond the floor, within target"),
])
def test_verdicts_claim_only_what_the_floor_allows(
        floor_tps: float, ratios: tuple[float, ...], expected: str) -> None:
    sums = [pg_report.summarize(pair("proactive", i, r)) for i, r in enumerate(ratios)]
    verdict = pg_report.harm_verdict(sums, {"tps": floor_tps, "p99": 0.05, "pairs": 3})
    assert verdict.split("; ")[0] == expected


def test_no_aa_pair_means_no_verdict() -> None:
    sums = [pg_report.summarize(pair("proactive", 0, 0.5))]
    assert pg_report.harm_verdict(sums, None).startswith("TPS: no A/A floor")
    assert "not measured" in pg_report.floor_sentence(None)


def test_render_places_modes_against_the_knee(tmp_path: Any) -> None:
    runs = [pair("none", i, r) for i, r in enumerate((0.98, 1.02, 1.0))]
    runs += [pair("size-640", i, 0.99, 1.0, back_mib=380, size=640) for i in (0, 1)]
    runs += [pair("proactive", i, 0.98, 1.0, back_mib=190) for i in range(3)]
    written = pg_report.write(runs, tmp_path)
    assert [p.name for p in written] == ["pg.md", "frontier.md", "frontier.png"]
    pg_md = (tmp_path / "pg.md").read_text()
    assert "Noise floor (A/A, 3 pairs" in pg_md
    assert "640 MiB, where the host got back 380 MiB" in pg_md
    row = next(x for x in pg_md.splitlines() if x.startswith("| `proactive` |"))
    assert "| 50 % |" in row  # 190 of the knee's 380 MiB
    assert "| 640 | 2 | 380 [380, 380] |" in (tmp_path / "frontier.md").read_text()


def _take(ts: float, from_mib: int, to_mib: int) -> dict[str, Any]:
    return {"action": "inflate", "result": "applied", "ts": ts, "class": "none",
            "from_kib": from_mib * 1024, "to_kib": to_mib * 1024}


def test_a_controller_still_inflating_near_the_end_is_named_as_stopped_by_the_phase() -> None:
    going = pair("proactive", 0, 1.0, back_mib=200)
    going["events"] = [_take(T0 + 20 * i, 1024 - 50 * i, 974 - 50 * i) for i in range(1, 8)]
    settled = pair("proactive", 1, 1.0, back_mib=200)
    settled["events"] = [_take(T0 + 10, 1024, 924), _take(T0 + 40, 924, 824)]
    sums = [pg_report.summarize(r) for r in (going, settled)]
    assert [s["still_taking"] for s in sums] == [True, False]
    assert sums[0]["take_steps_mib"] == [50.0] * 7
    assert sums[0]["take_gaps_s"] == [20.0] * 6
    line = pg_report.pace(sums)
    assert "steps of 50 MiB (median) every 20 s" in line
    assert "in 1 of 2 pairs" in line
    assert pg_report.pace([pg_report.summarize(pair("size-512", 0, 1.0, size=512))]) == ""


def test_a_pairs_time_is_read_from_pairs_run_back_to_back() -> None:
    runs = [pair("none", i, 1.0) for i in range(4)]
    for r, t0 in zip(runs, (T0, T0 + 240, T0 + 480, T0 + 5000), strict=True):
        r["t0"], r["t1"] = t0, t0 + MEASURE_S  # the last one ran after a long pause
    for r in runs:
        for g in r["guests"].values():  # the twins' samples move with the phase
            for x in (*g["samples"], *g["reports"], *g["pg"]):
                x["t"] += r["t0"] - T0
    line = pg_report.pair_time([pg_report.summarize(r) for r in runs])
    assert line == (" Run back to back, a pair took 4.0 min (median of 2 pairs that followed "
                    "another; longest 4.0 min).")
    assert pg_report.pair_time([pg_report.summarize(runs[0])]) == ""
