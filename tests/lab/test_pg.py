"""The real guest: Debian 12 + PostgreSQL 15 running pgbench, under the daemon (proactive).

One 1 GiB guest runs `pgbench -c 4` over its Unix socket; once pgbench reports, the daemon
(`autoballoon run`, the aggressive preset: proactive mode) drives the guest for a while.
Every assertion reads the guest's own console: its MemTotal (ABREPORT), its OOM kills, and
pgbench's own intervals (PGREPORT).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

from contrib.lab import Guest, GuestSpec, daemon_command, preset_policy_dir, run_daemon
from tests.lab.conftest import LabUp, wait_until

pytestmark = pytest.mark.lab

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
