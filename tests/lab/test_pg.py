"""The real guest: Debian 12 + PostgreSQL 15 running pgbench, under the daemon (proactive).

The lab part (marked ``lab``): one 1 GiB guest runs `pgbench -c 4` over its Unix socket;
once pgbench reports, the daemon (`autoballoon run`, the aggressive preset: proactive mode)
drives the guest for a while.
Every assertion reads the guest's own console: its MemTotal (ABREPORT), its OOM kills, and
pgbench's own intervals (PGREPORT). The rest needs no lab: the guest's pgbench log reducer
(contrib/lab/pg/pgreport.awk, run with the host's mawk, the guest's awk), the PGREPORT parser
and the pg guest's workload grammar.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from contrib.lab import Guest, GuestSpec, daemon_command, preset_policy_dir, run_daemon
from contrib.lab.lab import LAB_DIR, REPORT_KEYS, parse_pg_report, parse_report
from tests.lab.conftest import LabUp, wait_until

NAME = "ab-lab-pgt"
MEM_MIB = 1024
BENCH_S = 150  # pgbench runs this long from PostgreSQL's start; the daemon runs inside it
DAEMON_S = 90
INTERVAL_S = 2
MIN_INFLATION_MIB = 64  # "inflated": MemTotal at least this far below the guest's boot value
SKEW_S = 2.0  # slack when matching the guest's clock to the reports' uptimes


@dataclass
class PgRun:
    guest: Guest
    boot_memtotal_kib: int
    daemon_log: list[dict[str, object]]
    t_start: float
    t_end: float


@pytest.fixture(scope="module")
def pg_run(lab_up: LabUp, tmp_path_factory: pytest.TempPathFactory) -> PgRun:
    (guest,) = lab_up([GuestSpec(NAME, MEM_MIB, f"pgbench:4:{BENCH_S}", kind="pg")])
    first = guest.latest_report()
    assert first is not None
    wait_until(lambda: bool(guest.pg_reports()), 60, "a first PGREPORT from pgbench",
               diag=lambda: guest.console_text()[-1500:])
    policies = preset_policy_dir(tmp_path_factory.mktemp("pg"), "aggressive")
    cmd = daemon_command(NAME, policies, interval_s=INTERVAL_S, duration_s=DAEMON_S,
                         log_format="json")
    t_start = time.time()
    proc = run_daemon(cmd, capture_output=True, timeout=DAEMON_S + 60)
    t_end = time.time()
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    time.sleep(2 * 5)  # let the last pgbench intervals reach the console
    return PgRun(guest, int(first["MemTotal"]), log, t_start, t_end)


def host_time_of_uptime(guest: Guest) -> float:
    """host epoch - guest uptime, from the latest report (printed about once per second)."""
    latest = guest.latest_report()
    assert latest is not None
    return time.time() - latest["up"]


@pytest.mark.lab
def test_the_daemon_inflated_the_guest_while_pgbench_ran(pg_run: PgRun) -> None:
    g = pg_run.guest
    offset = host_time_of_uptime(g)
    reports = [(r["up"] + offset, int(r["MemTotal"])) for r in g.console_reports()]
    limit = pg_run.boot_memtotal_kib - MIN_INFLATION_MIB * 1024
    inflated = [(t, m) for t, m in reports if m <= limit]
    assert inflated, (f"the guest's MemTotal never fell {MIN_INFLATION_MIB} MiB below "
                      f"{pg_run.boot_memtotal_kib} kB; daemon actions: "
                      f"{[x for x in pg_run.daemon_log if x.get('action')][-5:]}")
    assert all(pg_run.t_start - SKEW_S <= t for t, _ in inflated), \
        "the guest was inflated before the daemon started"

    # pgbench intervals (their own start time, guest clock) with transactions, lying wholly
    # inside a stretch in which every ABREPORT showed the guest inflated.
    def inflated_throughout(a: float, b: float) -> bool:
        inside = [m for t, m in reports if a - SKEW_S <= t <= b + SKEW_S]
        return bool(inside) and all(m <= limit for m in inside)

    busy = [p for p in g.pg_reports()
            if p["tx"] > 0 and inflated_throughout(p["t"], p["t"] + p["interval"])]
    assert busy, f"no pgbench interval completed while inflated: {g.pg_reports()[-10:]}"
    assert sum(p["failed"] for p in g.pg_reports()) == 0
    inflations = [x for x in pg_run.daemon_log if x.get("action") == "inflate"]
    assert inflations, "the daemon logged no inflation"
    print(f"\n{g.name}: MemTotal {pg_run.boot_memtotal_kib // 1024} -> "
          f"{min(m for _, m in inflated) // 1024} MiB; {len(inflations)} inflations; "
          f"pgbench intervals while inflated: {len(busy)}, tps "
          f"{[p['tps'] for p in busy]}, p99 ms {[p['p99_ms'] for p in busy]}")


@pytest.mark.lab
def test_no_oom_kill_and_postgres_survived(pg_run: PgRun) -> None:
    g = pg_run.guest
    reports = g.console_reports()
    assert reports and max(int(r["oom_kill"]) for r in reports) == 0
    stats = g.guest_stats()["stats"]
    assert stats["stat-oom-kills"] == 0
    text = g.console_text()
    assert "Out of memory" not in text
    assert "PGEVENT postgres exited" not in text
    assert "PGEVENT postgres failed" not in text


# ------------------------------------------------------------------ no lab needed

AWK = shutil.which("mawk") or shutil.which("awk")


def reduce_log(lines: list[str], tmp_path: Path, interval: int = 5) -> list[dict[str, float]]:
    """Run pgreport.awk over pgbench per-transaction log lines; the parsed PGREPORT lines."""
    assert AWK is not None
    proc = subprocess.run(
        [AWK, "-v", f"INTERVAL={interval}", "-v", f"SORTED={tmp_path / 'sorted'}",
         "-f", str(LAB_DIR / "pg" / "pgreport.awk")],
        input="".join(x + "\n" for x in lines), capture_output=True, text=True, check=True)
    reports = [parse_pg_report(x) for x in proc.stdout.splitlines()]
    assert all(r is not None for r in reports), proc.stdout
    return [r for r in reports if r is not None]


def log_line(client: int, n: int, latency_us: int | str, end_s: float) -> str:
    """pgbench 15's -l line: client_id transaction_no time script_no time_epoch time_us."""
    return f"{client} {n} {latency_us} 0 {int(end_s)} {int(end_s % 1 * 1e6)}"


def nearest_rank(values: list[int], pct: int) -> float:
    ordered = sorted(values)
    return ordered[-(-len(ordered) * pct // 100) - 1] / 1000


def test_pgreport_gives_exact_percentiles_per_interval(tmp_path: Path) -> None:
    """Three intervals with transactions, one stalled in between; values are printed with two
    decimals in ms, hence the 0.006 ms tolerance."""
    rng = random.Random(14)
    t0 = 1_800_000_000  # an interval boundary (multiple of 5)
    latencies = {0: [rng.randint(1_000, 400_000) for _ in range(237)],
                 1: [rng.randint(1_000, 50_000) for _ in range(3)],
                 3: [rng.randint(1_000, 9_000) for _ in range(101)]}  # interval 2: a stall
    lines = []
    for slot, lats in latencies.items():
        for i, lat in enumerate(lats):
            lines.append(log_line(i % 4, i, lat, t0 + slot * 5 + 5 * i / len(lats)))
    lines.insert(10, log_line(2, 999, "failed", t0 + 1))
    reports = reduce_log(lines, tmp_path)
    assert [r["t"] for r in reports] == [t0, t0 + 5, t0 + 10, t0 + 15]
    stall = reports[2]
    assert stall["tx"] == 0 and stall["tps"] == 0
    for r, slot in zip(reports, (0, 1, None, 3), strict=True):
        if slot is None:
            continue
        lats = latencies[slot]
        assert r["tx"] == len(lats)
        assert r["tps"] == pytest.approx(len(lats) / 5, abs=0.05)
        assert r["p50_ms"] == pytest.approx(nearest_rank(lats, 50), abs=0.006)
        assert r["p99_ms"] == pytest.approx(nearest_rank(lats, 99), abs=0.006)
        assert r["max_ms"] == pytest.approx(max(lats) / 1000, abs=0.006)
        assert r["lat_avg_ms"] == pytest.approx(sum(lats) / len(lats) / 1000, abs=0.006)
    assert [r["failed"] for r in reports] == [1, 0, 0, 0]
    # the interval with 3 transactions: p99 is the largest (nearest rank), p50 the second
    assert reports[1]["p99_ms"] == pytest.approx(max(latencies[1]) / 1000, abs=0.006)
    assert reports[1]["p50_ms"] == pytest.approx(sorted(latencies[1])[1] / 1000, abs=0.006)


def test_parse_pg_report_needs_every_key() -> None:
    line = ("PGREPORT up=30.68 t=1795696830 interval=5 tx=229 failed=0 tps=45.8 "
            "lat_avg_ms=85.66 p50_ms=75.85 p99_ms=184.99 max_ms=231.81")
    r = parse_pg_report("[  12.3] kernel noise " + line)
    assert r is not None and r["tps"] == 45.8 and r["t"] == 1795696830
    assert parse_pg_report(line.rsplit(" ", 1)[0]) is None  # cut short by kernel output
    assert parse_pg_report(line.replace("tps=45.8", "tps=4.5.8")) is None
    assert parse_pg_report("ABREPORT up=1.0") is None


@pytest.mark.parametrize("workload", ["idle", "warm:900", "pgbench:4:60",
                                      "warm:1024+pgbench:1:5", "warm:1024:120+pgbench:4:300"])
def test_pg_workloads_accepted(workload: str) -> None:
    assert GuestSpec("db", 1024, workload, kind="pg").kind == "pg"


@pytest.mark.parametrize("workload", ["cache:64", "pgbench:0:60", "pgbench:4", "idle+warm:5",
                                      "pgbench:4:60+warm:5", "warm:64:0"])
def test_pg_workloads_rejected(workload: str) -> None:
    with pytest.raises(ValueError, match="bad pg workload"):
        GuestSpec("db", 1024, workload, kind="pg")


def test_unknown_kind_rejected() -> None:
    with pytest.raises(ValueError, match="bad guest kind"):
        GuestSpec("db", 1024, "idle", kind="windows")


def test_the_pg_guests_abreport_lines_parse_without_the_busybox_truth_fields() -> None:
    # The PostgreSQL guest's init prints the classic ABREPORT fields only (no memload, no PSI):
    # a lab waiting for a complete busybox line would never see it ready.
    line = (
        "ABREPORT up=7.71 MemTotal=991352 MemAvailable=856260 MemFree=909948 Buffers=2068 "
        "Cached=44940 oom_kill=0 allocstall=0 pgscan_kswapd=0 pgscan_direct=0 pgsteal_kswapd=0 "
        "pgsteal_direct=0 memload_restarts=0 ws_mib=0"
    )
    assert parse_report(line) is None  # the busybox guests' lines must carry the truth fields
    report = parse_report(line, REPORT_KEYS)
    assert report is not None and report["MemAvailable"] == 856260
