"""Density: two warm PostgreSQL guests whose QEMU processes share a memory cgroup smaller than
the guests' total maximum. Which setup keeps every guest running, and pgbench unharmed?

    python -m benchmarks.lab.density [--mode MODE ...] [--ratio R ...] [--warm-s 90]
                                     [--measure-s 150] [--overhead-mib 200] [--render-only]

Two 1 GiB Debian 12 + PostgreSQL 15 lab guests (``GuestSpec(kind="pg")``) in the libvirt resource
partition ``/abdensity``: libvirt starts their QEMU processes in that cgroup, so one memory limit
on it caps both together. The limit is

    limit = (sum of the guests' maximum memory) / ratio + guests x per-QEMU overhead

where the overhead (``--overhead-mib``) is what a QEMU process holds besides guest RAM and no
balloon can return (its TCG translation cache, capped at 128 MiB for these guests, code,
heap): VmRSS minus the RSS of the guest-RAM mapping, measured on these guests (every run
records it again). At ratio 1.5: 2048 / 1.5 + 2 x 200 = 1765 MiB.

Why a cgroup limit and not a host process that holds memory: it is what an operator who caps
``machine.slice`` (or a libvirt partition) does, the guests meet it exactly as they would meet a
full host (this host has no swap: above the limit the kernel's OOM killer takes a QEMU process
inside the cgroup, a whole guest lost), and it cannot hurt anything else on this shared host,
whereas holding ~21 GiB in a host process could get other users' processes OOM-killed.

Each guest boots under the limit, reads its database's files (321 MB) at once, then fills its
page cache gradually (``warm:1024:WARM_S``: 1 GiB of its disk over WARM_S seconds) while
``pgbench -c 4 -j 1`` runs from boot to the end. The measured phase is the ``--measure-s``
seconds after both guests said their warm-up was done. Modes:

- ``nolimit``: no memory limit, no controller: the baseline pgbench is compared with;
- ``plain``: the limit, no controller, no free page reporting;
- ``fpr``: the limit, free page reporting + deflate-on-OOM on the balloon, no controller;
- ``autoballoon``: the limit, free page reporting + deflate-on-OOM, and the daemon (``autoballoon
  run`` as a child process) with the shipped default policy (on-demand) and
  ``host_memory_cgroup`` set to the partition: the memory it protects is the cgroup's;
- ``proactive``: the same with the aggressive preset (proactive mode: takes what guests can
  spare whatever the host's state, in larger and quicker steps);
- ``startup``: ``autoballoon`` with ``startup_ratio = 0.5`` in the default policy: each guest is
  brought to half its maximum when first seen, before its page cache fills, and grows from there
  on demand.

In the modes with the daemon it starts before the guests boot, as it runs on a host.

A run "holds" when no guest is lost (its domain still running, no OOM kill in the cgroup), the
guests' OOM killers killed nothing, and in the measured phase pgbench's TPS (both guests) is
within 10 % of the median of the ``nolimit`` runs and its p99 latency (mean of the 5 s
intervals' p99) within 20 %. Sampled every ``--interval`` seconds from the host: each QEMU's
VmRSS and guest-RAM RSS (smaps), balloon sizes (libvirt), the virtio disk's reads, the cgroup's
usage, limit, failcnt and OOM kills; from each guest's console its memory PSI.

Every run keeps its raw data, gzipped, in benchmarks/results/raw/density/ (committed, small);
benchmarks/results/density.md and density.png are rendered from all the runs there
(``--render-only`` renders without running anything). ``--runs N`` (default 3) repeats every
mode and ratio, each cell reported as "holds k/N". The memory limit is removed (-1) after each run.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from benchmarks.common import (
    GUEST_PREFIX,
    RESULTS,
    back_to_back,
    header,
    machine,
    other_domains,
    say,
)
from benchmarks.lab.pg import CLIENTS
from benchmarks.lab.pg_report import psi_pct
from contrib.lab import (
    Guest,
    GuestSpec,
    Lab,
    daemon_command,
    ensure_partition,
    field_policy_dir,
    guest_ram_rss_kib,
    lab_lock,
    qemu_pid,
    qemu_rss_kib,
    start_daemon,
)

PARTITION = "/abdensity"
GUESTS = 2
MEM_MIB = 1024
RAW = RESULTS / "raw" / "density"
TPS_TOLERANCE = 0.10
P99_TOLERANCE = 0.20


@dataclass(frozen=True)
class Mode:
    limit: bool
    fpr: bool
    daemon: bool
    what: str
    preset: str = "default"
    """The daemon's policy: a shipped preset (policies/presets/), or "default"."""
    fields: tuple[tuple[str, object], ...] = ()
    """Policy fields set over the preset's."""


MODES: dict[str, Mode] = {
    "nolimit": Mode(False, False, False, "no limit, no controller (baseline)"),
    "plain": Mode(True, False, False, "limit, no controller"),
    "fpr": Mode(True, True, False, "limit, free page reporting + deflate-on-OOM"),
    "autoballoon": Mode(True, True, True, "limit, FPR + deflate-on-OOM + autoballoon on-demand "
                        "(the shipped default policy) with host_memory_cgroup"),
    "proactive": Mode(True, True, True, "limit, FPR + deflate-on-OOM + autoballoon with the "
                      "aggressive preset (proactive mode, 10 % steps, stable 10 s, cooldown 6 s) "
                      "and host_memory_cgroup", "aggressive"),
    "startup": Mode(True, True, True, "limit, FPR + deflate-on-OOM + autoballoon on-demand "
                    "(the shipped default policy) with `startup_ratio = 0.5` and "
                    "host_memory_cgroup", fields=(("startup_ratio", 0.5),)),
}


def names() -> list[str]:
    return [f"{GUEST_PREFIX}d{i}" for i in range(GUESTS)]


def limit_mib(ratio: float, overhead_mib: int) -> int:
    """The partition's limit: the guests' maxima / ratio + per-QEMU overhead for each guest."""
    return int(GUESTS * MEM_MIB / ratio + GUESTS * overhead_mib)


# ----------------------------------------------------------------------------- the cgroup (v1)

def cg_read(memdir: Path, name: str) -> str:
    return (memdir / name).read_text()


def cg_oom_kills(memdir: Path) -> int:
    """The partition's own oom_kill counter. cgroup v1 counts a kill in the victim's cgroup
    (the QEMU's child cgroup, removed with the domain), not in the parent whose limit was hit:
    ``kernel_oom_kills`` is the count that tells."""
    for line in cg_read(memdir, "memory.oom_control").splitlines():
        key, _, val = line.partition(" ")
        if key == "oom_kill":
            return int(val)
    return 0


def kernel_oom_kills(since: float, until: float) -> list[float]:
    """Wall-clock times of the kernel's OOM kills in the partition between ``since`` and
    ``until``, from the kernel log (``oom-kill:... oom_memcg=/abdensity.partition ...``)."""
    out = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
    booted = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    memcg = f"oom_memcg={PARTITION}.partition,"
    times = []
    for line in out.splitlines():
        if line.startswith("[") and "oom-kill:" in line and memcg in line:
            t = booted + float(line[1:line.index("]")])
            if since <= t <= until:
                times.append(t)
    return times


def cg_state(memdir: Path) -> dict[str, int]:
    return {
        "cg_usage": int(cg_read(memdir, "memory.usage_in_bytes")) // 1024,
        "cg_limit": int(cg_read(memdir, "memory.limit_in_bytes")) // 1024,
        "cg_failcnt": int(cg_read(memdir, "memory.failcnt")),
        "cg_oom_kill": cg_oom_kills(memdir),
    }


def set_limit(memdir: Path, mib: int | None) -> None:
    """``mib`` MiB on the partition, or no limit (None: -1)."""
    (memdir / "memory.limit_in_bytes").write_text("-1" if mib is None else str(mib << 20))


# ----------------------------------------------------------------------------- one run

def guest_sample(guest: Guest, pid: int, mem_kib: int) -> dict[str, Any]:
    try:
        if not guest.is_running():
            return {"running": False}
        rd_req, rd_bytes, *_ = guest.dom.blockStats("vda")
        return {"running": True, "qemu_rss": qemu_rss_kib(pid),
                "ram_rss": guest_ram_rss_kib(pid, mem_kib),
                "balloon": guest.memory_stats()["actual"], "rd_req": rd_req,
                "rd_bytes": rd_bytes}
    except (libvirt.libvirtError, OSError, KeyError):
        return {"running": False}


def take_sample(guests: Sequence[Guest], pids: Mapping[str, int],
                memdir: Path) -> dict[str, Any]:
    return {"t": time.time(), **cg_state(memdir),
            "guests": {g.name: guest_sample(g, pids[g.name], MEM_MIB * 1024) for g in guests}}


def warm_done(guest: Guest) -> bool:
    return "PGEVENT warm done" in guest.console_text()


def run(mode: str, ratio: float, warm_s: int, measure_s: float, overhead_mib: int,
        interval_s: float, index: int = 0) -> dict[str, Any]:
    m = MODES[mode]
    bench_s = int(warm_s + measure_s + 240)
    specs = [GuestSpec(n, MEM_MIB, f"warm:{MEM_MIB}:{warm_s}+pgbench:{CLIENTS}:{bench_s}",
                       kind="pg", partition=PARTITION, autodeflate=m.fpr,
                       free_page_reporting=m.fpr) for n in names()]
    limit = limit_mib(ratio, overhead_mib) if m.limit else None
    samples: list[dict[str, Any]] = []
    lost: dict[str, float] = {}
    with lab_lock(f"density benchmark ({mode} {ratio})"), tempfile.TemporaryDirectory() as tmp:
        lab = Lab()
        memdir = ensure_partition(PARTITION)
        daemon: subprocess.Popen[str] | None = None
        log_path = Path(tmp) / "daemon.log"
        try:
            lab.down(names())
            set_limit(memdir, None)
            (memdir / "memory.failcnt").write_text("0")
            oom0 = cg_oom_kills(memdir)
            set_limit(memdir, limit)
            others = other_domains(lab.conn)
            if m.daemon:  # running before the guests boot, as on a host
                policies = field_policy_dir(Path(tmp), m.preset, **dict(m.fields))
                cmd = daemon_command(f"{GUEST_PREFIX}d*", policies, log_format="json",
                                     status_file=Path(tmp) / "status.json",
                                     extra=["--host-memory-cgroup", str(memdir)])
                daemon = start_daemon(cmd, stderr=log_path.open("w"),
                                      stdout=subprocess.DEVNULL)
            t_boot = time.time()
            guests = lab.up(specs, timeout=300)
            boot_s = time.time() - t_boot
            pids = {g.name: qemu_pid(g.name) for g in guests}
            say(f"{mode} x{ratio}: {len(guests)} guests up after {boot_s:.0f} s, limit "
                f"{limit} MiB; warming over {warm_s} s")

            def tick() -> None:
                s = take_sample(guests, pids, memdir)
                samples.append(s)
                for name, g in s["guests"].items():
                    if not g["running"] and name not in lost:
                        lost[name] = s["t"]
                        say(f"{name} LOST at {s['t'] - t_boot:.0f} s after boot "
                            f"(cgroup OOM kills {s['cg_oom_kill'] - oom0})")
                time.sleep(interval_s)

            deadline = time.monotonic() + warm_s + 180
            while time.monotonic() < deadline and not all(
                    warm_done(g) or g.name in lost for g in guests):
                tick()
            t0 = time.time()
            say(f"warm-up over after {t0 - t_boot:.0f} s; measuring {measure_s:.0f} s")
            while time.time() < t0 + measure_s and len(lost) < len(guests):
                tick()  # (nothing left to measure once every guest is lost: the lab is shared)
            t1 = time.time()
            if daemon is not None:
                daemon.terminate()
                daemon.wait(timeout=30)
            time.sleep(10)  # pgbench's last intervals reach the console
            per_guest = {}
            for g in guests:
                reports = g.console_reports()
                offset = time.time() - reports[-1]["up"] if reports else 0.0
                per_guest[g.name] = {
                    "oom_kill": max((r["oom_kill"] for r in reports), default=0),
                    "reports": [{"t": r["up"] + offset, **{k: r[k] for k in PSI_KEYS if k in r}}
                                for r in reports],
                    "pg": [p for p in g.pg_reports() if t0 <= p["t"]
                           and p["t"] + p["interval"] <= t1],
                    "pg_all": g.pg_reports(),
                }
            cg_end = cg_state(memdir)
            cg_end["cg_oom_kill"] -= oom0
            kills = kernel_oom_kills(t_boot - 5, time.time())
        finally:
            if daemon is not None and daemon.poll() is None:
                daemon.kill()
            lab.down(names())
            set_limit(memdir, None)
            lab.close()
        daemon_log = log_path.read_text() if log_path.exists() else ""
    oom_kills_s = [t - t_boot for t in kills]
    return {"mode": mode, "ratio": ratio if m.limit else None, "limit_mib": limit, "run": index,
            "overhead_mib": overhead_mib, "warm_s": warm_s, "measure_s": measure_s,
            "interval_s": interval_s, "boot_s": boot_s, "t_boot": t_boot, "t0": t0, "t1": t1,
            "samples": samples, "lost": lost, "cg_end": cg_end,
            "kernel_oom_kills_s": oom_kills_s, "guests": per_guest,
            "others": others, "daemon_changes": daemon_changes(daemon_log),
            "daemon_log": daemon_log[-200_000:],
            "machine": machine()}


def daemon_changes(log: str) -> dict[str, int]:
    """From the daemon's JSON log: balloon changes applied, by action, and warnings logged."""
    counts: dict[str, int] = {}
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if not isinstance(doc, dict):
                continue
            if doc.get("action") and doc.get("result") == "applied":
                counts[str(doc["action"])] = counts.get(str(doc["action"]), 0) + 1
            if doc.get("level") in ("warning", "error"):
                counts["warnings"] = counts.get("warnings", 0) + 1
    return counts


def daemon_story(log: str, t_boot: float) -> list[tuple[float, str]]:
    """The daemon's balloon changes, host verdicts and guests stopping, as (s after boot,
    message): what it saw and did, in its own words."""
    story = []
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            msg = str(doc.get("msg", "")) if isinstance(doc, dict) else ""
            if "host_verdict" in doc or doc.get("action") or msg.endswith(" stopped"):
                story.append((float(doc["ts"]) - t_boot, msg.split(" [rule")[0]))
    return story


# ----------------------------------------------------------------------------- summary

PSI_KEYS = ("psi_some_total", "psi_full_total")


def reads_per_tx(r: Mapping[str, Any], name: str, tx: float) -> float | None:
    """Virtio disk read requests per pgbench transaction over the measured phase, for a guest
    still running at its end (None otherwise, or for runs made before disks were sampled)."""
    rows = [s["guests"][name] for s in r["samples"] if r["t0"] <= s["t"] <= r["t1"]]
    if not rows or not tx or "rd_req" not in rows[0] or "rd_req" not in rows[-1]:
        return None
    return float(rows[-1]["rd_req"] - rows[0]["rd_req"]) / tx


def summarize(r: Mapping[str, Any]) -> dict[str, Any]:
    t0, t1 = r["t0"], r["t1"]
    steady = [s for s in r["samples"] if t0 <= s["t"] <= t1]
    per: dict[str, dict[str, Any]] = {}
    tx = 0.0
    p99s: list[float] = []
    for name, g in r["guests"].items():
        pg = g["pg"]
        gtx = sum(p["tx"] for p in pg)
        tx += gtx
        p99s += [p["p99_ms"] for p in pg]
        reports = g.get("reports", [])
        ram = [s["guests"][name].get("ram_rss") for s in r["samples"]]
        over = [s["guests"][name]["qemu_rss"] - s["guests"][name]["ram_rss"]
                for s in r["samples"] if s["guests"][name]["running"]]
        end = steady[-1]["guests"][name] if steady else {"running": False}
        per[name] = {
            "tps": gtx / max(t1 - t0, 1.0),
            "p50_ms": statistics.median(p["p50_ms"] for p in pg) if pg else 0.0,
            "p99_ms": statistics.fmean(p["p99_ms"] for p in pg) if pg else 0.0,
            "oom_kill": g["oom_kill"],
            "ram_rss_peak_mib": max((x for x in ram if x is not None), default=0) / 1024,
            "ram_rss_end_mib": end.get("ram_rss", 0) / 1024,
            "qemu_rss_end_mib": end.get("qemu_rss", 0) / 1024,
            "balloon_end_mib": end.get("balloon", 0) / 1024,
            "overhead_max_mib": max(over, default=0) / 1024,
            "lost_s": (r["lost"][name] - r["t_boot"]) if name in r["lost"] else -1.0,
            "reads_per_tx": reads_per_tx(r, name, gtx),
            "psi_some_pct": psi_pct(reports, t0, t1, "psi_some_total"),
        }
    return {
        "per": per,
        "tps": tx / max(t1 - t0, 1.0),
        "p99_ms": statistics.fmean(p99s) if p99s else 0.0,
        "p50_ms": statistics.median([v["p50_ms"] for v in per.values() if v["tps"]] or [0.0]),
        "lost": len(r["lost"]),
        "guest_oom": sum(int(v["oom_kill"]) for v in per.values()),
        "cg_oom": len(r["kernel_oom_kills_s"]),
        "failcnt": r["cg_end"]["cg_failcnt"],
        "usage_peak_mib": max((s["cg_usage"] for s in r["samples"]), default=0) / 1024,
        "ram_rss_end_mib": sum(v["ram_rss_end_mib"] for v in per.values()),
        "reads_per_tx": _mean_of(v["reads_per_tx"] for v in per.values()),
        "psi_some_pct": _mean_of(v["psi_some_pct"] for v in per.values()),
    }


def _mean_of(xs: Iterable[float | None]) -> float | None:
    """The mean of the guests' figures, None when a guest has none (lost, or an older run)."""
    got = list(xs)
    return None if not got or any(x is None for x in got) else statistics.fmean(
        x for x in got if x is not None)


def verdict(s: Mapping[str, Any], base: Mapping[str, Any] | None) -> tuple[bool, list[str]]:
    why = []
    if s["lost"]:
        why.append(f"{s['lost']} guest(s) lost")
    if s["cg_oom"]:
        why.append(f"{s['cg_oom']} cgroup OOM kill(s)")
    if s["guest_oom"]:
        why.append(f"{s['guest_oom']} guest OOM kill(s)")
    if base is None:
        why.append("no baseline run")
    else:
        if s["tps"] < (1 - TPS_TOLERANCE) * base["tps"]:
            why.append(f"TPS {s['tps'] / base['tps'] - 1:+.0%}")
        if s["p99_ms"] > (1 + P99_TOLERANCE) * base["p99_ms"]:
            why.append(f"p99 {s['p99_ms'] / base['p99_ms'] - 1:+.0%}")
    return not why, why


# ----------------------------------------------------------------------------- rendering

DEFAULT_WARM_S = 90


def label(r: Mapping[str, Any]) -> str:
    """``mode xRATIO``, with ``, warm N s`` when the warm-up was not the default's."""
    name = r["mode"] if r["ratio"] is None else f"{r['mode']} x{r['ratio']:g}"
    return name if r["warm_s"] == DEFAULT_WARM_S else f"{name}, warm {r['warm_s']} s"


def raw_path(r: Mapping[str, Any]) -> Path:
    key = label(r).replace(" x", "-").replace(", warm ", "-warm").replace(" s", "")
    return RAW / f"density-{key}-r{r.get('run', 0)}.json.gz"


def load_runs() -> list[dict[str, Any]]:
    order = list(MODES)
    runs = []
    for path in sorted(RAW.glob("density-*.json.gz")):
        with gzip.open(path, "rt") as f:
            runs.append(json.load(f))
    return sorted(runs, key=lambda r: (order.index(r["mode"]), r["ratio"] or 0, r["warm_s"],
                                       r.get("run", 0)))


def baseline(runs: Sequence[Mapping[str, Any]],
             sums: Sequence[Mapping[str, Any]]) -> dict[str, float] | None:
    """The median of the ``nolimit`` runs: what every capped run is held against."""
    base = [s for r, s in zip(runs, sums, strict=True) if r["mode"] == "nolimit"]
    if not base:
        return None
    return {k: statistics.median(s[k] for s in base)
            for k in ("tps", "p99_ms", "ram_rss_end_mib")} | {"runs": len(base)}


def cell_rows(runs: Sequence[Mapping[str, Any]], sums: Sequence[Mapping[str, Any]],
              base: Mapping[str, float] | None) -> list[str]:
    """One row per mode and ratio: how many of its runs held, and medians over its runs."""
    cells: dict[str, list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {}
    for r, s in zip(runs, sums, strict=True):
        cells.setdefault(label(r), []).append((r, s))

    def med(xs: Iterable[float | None], f: str) -> str:
        got = [x for x in xs if x is not None]
        if not got:
            return "-"
        m, lo, hi = statistics.median(got), min(got), max(got)
        return f"{m:{f}} [{lo:{f}}, {hi:{f}}]" if len(got) > 1 else f"{m:{f}}"

    rows = [
        "| mode and ratio | limit (MiB) | holds | guests lost | OOM kills: cgroup / guest "
        "| TPS both guests | p99 ms | disk reads / tx | memory PSI some % "
        "| guest-RAM RSS end, both (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, cell in cells.items():
        r0 = cell[0][0]
        holds = sum(verdict(s, base)[0] for _, s in cell)
        ss = [s for _, s in cell]
        rows.append(
            f"| {name} | {r0['limit_mib'] or 'none'} | "
            + ("baseline" if r0["mode"] == "nolimit" else f"{holds}/{len(cell)}")
            + f" | {sum(s['lost'] for s in ss)} | {sum(s['cg_oom'] for s in ss)} / "
            f"{sum(s['guest_oom'] for s in ss)} | {med((s['tps'] for s in ss), '.1f')} | "
            f"{med((s['p99_ms'] for s in ss), '.0f')} | "
            f"{med((s.get('reads_per_tx') for s in ss), '.2f')} | "
            f"{med((s.get('psi_some_pct') for s in ss), '.1f')} | "
            f"{med((s['ram_rss_end_mib'] for s in ss), '.0f')} |")
    return rows


def run_time(runs: Sequence[Mapping[str, Any]]) -> str:
    """How long a run takes here, from runs made back to back (boot to boot)."""
    took = back_to_back([r["t_boot"] for r in runs], 900.0)
    if took is None:
        return ""
    med, n, longest = took
    return (f" Run back to back, a run took {med / 60:.1f} min (median of {n} runs that "
            f"followed another; longest {longest / 60:.1f} min).")


def render(runs: Sequence[Mapping[str, Any]]) -> str:
    sums = [summarize(r) for r in runs]
    base = baseline(runs, sums)
    first = runs[0]
    ov = max(v["overhead_max_mib"] for s in sums for v in s["per"].values())
    lines = [
        header("Density: two warm PostgreSQL guests under a memory cgroup", first["machine"]),
        f"Two {MEM_MIB} MiB Debian 12 + PostgreSQL 15 guests (1 vCPU each, TCG), their QEMU "
        f"processes in libvirt resource partition `{PARTITION}`, whose memory cgroup (v1) gets "
        "the limit `guests x max memory / ratio + guests x per-QEMU overhead`, overhead "
        f"{first['overhead_mib']} MiB (VmRSS minus guest-RAM RSS; the most seen in these runs: "
        f"{ov:.0f} MiB). No swap: above the limit the kernel OOM-kills a QEMU in the cgroup. "
        f"Each guest reads its 321 MB database at boot, then 1 GiB of its disk over "
        f"{DEFAULT_WARM_S} s (unless the run's name says otherwise) while "
        f"`pgbench -c {CLIENTS} -j 1` runs; measured phase "
        f"{first['measure_s']:.0f} s after both finished warming. Host samples every "
        f"{first['interval_s']:g} s. The 2-core host is shared (other domains running at the "
        f"start: {', '.join(first['others']) or 'none'}), so TPS is noisy. `python -m "
        "benchmarks.lab.density` (see its --help; `--runs N` repeats each cell)."
        + run_time(runs),
        "",
        f"A run holds when no guest is lost, nothing is OOM-killed (cgroup or guest), and "
        f"pgbench's TPS (both guests) is within {TPS_TOLERANCE:.0%} and its p99 within "
        f"{P99_TOLERANCE:.0%} of the median of the `nolimit` runs"
        + (f" ({base['runs']:.0f} run(s): {base['tps']:.1f} TPS, p99 {base['p99_ms']:.0f} ms)."
           if base else " (none measured: no run can hold)."),
        "",
        *cell_rows(runs, sums, base),
        "",
        "Cells: median [min, max] over the cell's runs. *Disk reads / tx*: virtio read requests "
        "per pgbench transaction, mean of the two guests; *memory PSI some*: % of the measured "
        "phase a task in the guest was stalled on memory (`/proc/pressure/memory`), mean of the "
        "two guests; `-` where a guest was lost or the run predates these columns.",
        "",
        "Every run:",
        "",
        "| run | limit (MiB) | warm-up done (s after boot) | guests lost (s after boot) "
        "| cgroup failcnt / OOM kills | guest OOM kills | TPS (both) | p50 / p99 (ms) "
        "| per guest TPS, p50/p99 (ms) | cgroup peak (MiB) | guest-RAM RSS end (MiB) "
        "| balloons end (MiB) | holds |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for r, s in zip(runs, sums, strict=True):
        ok, why = verdict(s, base)
        lost = ", ".join(f"{n.removeprefix(GUEST_PREFIX)} at {v['lost_s']:.0f}"
                         for n, v in s["per"].items() if v["lost_s"] >= 0) or "0"
        per = "; ".join(f"{v['tps']:.1f}, {v['p50_ms']:.0f}/{v['p99_ms']:.0f}"
                        if v["tps"] else "lost" for v in s["per"].values())
        balloons = " / ".join(f"{v['balloon_end_mib']:.0f}" for v in s["per"].values())
        held = "yes" if ok else "no: " + ", ".join(why)
        lines.append(
            f"| {label(r)} #{r.get('run', 0)} | {r['limit_mib'] or 'none'} | "
            f"{r['t0'] - r['t_boot']:.0f} | {lost} | "
            f"{s['failcnt']} / "
            f"{s['cg_oom']} | {s['guest_oom']} | {s['tps']:.1f} | {s['p50_ms']:.0f} / "
            f"{s['p99_ms']:.0f} | {per} | {s['usage_peak_mib']:.0f} | "
            f"{s['ram_rss_end_mib']:.0f} | {balloons} | "
            f"{'baseline' if r['mode'] == 'nolimit' else held} |")
    kept = [(r, s) for r, s in zip(runs, sums, strict=True)
            if r["mode"] != "nolimit" and not s["lost"]]
    if base is not None:
        lines += ["", "Host memory returned: the guests' RAM on the host (guest-RAM RSS, both "
                  "guests) at the end of the measured phase, against the `nolimit` runs' "
                  f"median {base['ram_rss_end_mib']:.0f} MiB:", ""]
        lines += [f"- {label(r)} #{r.get('run', 0)}: {s['ram_rss_end_mib']:.0f} MiB, "
                  f"{base['ram_rss_end_mib'] - s['ram_rss_end_mib']:.0f} MiB less"
                  for r, s in kept] or ["- none: no run with a limit kept both guests."]
    lines += ["", "What the daemon did, in its own log (JSON lines: balloon changes applied, "
              "the host's situation as it saw it, guests stopping; seconds after boot):", ""]
    for r in runs:
        if MODES[r["mode"]].daemon:
            changes = ", ".join(f"{k} {v}" for k, v in sorted(r["daemon_changes"].items()))
            kept_log = "" if "daemon_log" in r else " (the log itself was not kept in this run)"
            lines.append(f"- {label(r)} #{r.get('run', 0)}: {changes or 'no change'}{kept_log}")
            story = daemon_story(r.get("daemon_log", ""), r["t_boot"])
            lines += [f"  - {t:.0f} s after boot: {msg}" for t, msg in story[:14]]
            if len(story) > 14:
                lines.append(f"  - ... {len(story) - 14} more lines")
    lines += ["", "Modes: " + "; ".join(f"`{k}`: {v.what}" for k, v in MODES.items()) + ".",
              "", "![density](density.png)", ""]
    return "\n".join(lines)


def plot(runs: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ("QEMU RSS per guest (MiB)", "cgroup usage vs limit (MiB)", "balloon per guest (MiB)",
            "pgbench TPS per guest")
    width = max(8.0, 3.6 * len(runs))
    fig, axes = plt.subplots(len(rows), len(runs), figsize=(width, 9), squeeze=False,
                             sharex="col", sharey="row")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, r in enumerate(runs):
        tb = r["t_boot"]
        ts = [s["t"] - tb for s in r["samples"]]
        ax = axes[0][j]
        ax.set_title(label(r), fontsize=9)
        for k, name in enumerate(r["guests"]):
            c = colors[k % len(colors)]
            gs = [s["guests"][name] for s in r["samples"]]
            axes[0][j].plot(ts, [g.get("qemu_rss", float("nan")) / 1024 for g in gs], color=c,
                            lw=1.2, label=name.removeprefix(GUEST_PREFIX))
            axes[2][j].plot(ts, [g.get("balloon", float("nan")) / 1024 for g in gs], color=c,
                            lw=1.2)
            pg = r["guests"][name]["pg_all"]
            axes[3][j].plot([p["t"] - tb for p in pg], [p["tps"] for p in pg], color=c, lw=1)
            if name in r["lost"]:
                for row in axes[:, j]:
                    row.axvline(r["lost"][name] - tb, color="red", ls="--", lw=1)
        axes[1][j].plot(ts, [s["cg_usage"] / 1024 for s in r["samples"]], color="k", lw=1.2,
                        label="usage")
        if r["limit_mib"]:
            axes[1][j].axhline(r["limit_mib"], color="red", lw=1, label="limit")
        for row in axes[:, j]:
            row.axvspan(r["t0"] - tb, r["t1"] - tb, color="green", alpha=0.07)
            row.grid(alpha=0.3)
            row.tick_params(labelsize=7)
        axes[-1][j].set_xlabel("seconds since boot", fontsize=8)
    for i, what in enumerate(rows):
        axes[i][0].set_ylabel(what, fontsize=8)
    axes[0][0].legend(fontsize=7, loc="lower right")
    axes[1][0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Two warm PostgreSQL guests in one memory cgroup\ngreen: measured phase; "
                 "red dashed: a guest lost (its QEMU OOM-killed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def write_results(out: Path) -> None:
    runs = load_runs()
    if not runs:
        raise SystemExit(f"no density runs in {RAW}")
    out.write_text(render(runs))
    plot(runs, out.with_suffix(".png"))
    say(f"wrote {out} and {out.with_suffix('.png').name} from {len(runs)} run(s)")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", action="append", choices=list(MODES),
                    help="run this mode (repeatable; default: all, nolimit first)")
    ap.add_argument("--ratio", action="append", type=float,
                    help="overcommit ratio: guests' total maximum / the limit without QEMU "
                    "overhead (repeatable; default 1.5; nolimit ignores it)")
    ap.add_argument("--warm-s", type=int, default=DEFAULT_WARM_S,
                    help="seconds over which each guest reads 1 GiB of its disk (default "
                    f"{DEFAULT_WARM_S})")
    ap.add_argument("--measure-s", type=float, default=150.0,
                    help="measured phase after the warm-up, seconds (default 150)")
    ap.add_argument("--overhead-mib", type=int, default=200,
                    help="per-QEMU memory no balloon returns, added to the limit per guest "
                    "(default 200: measured VmRSS minus guest-RAM RSS)")
    ap.add_argument("--interval", type=float, default=2.0, help="host sample period, s")
    ap.add_argument("--runs", type=int, default=3,
                    help="runs of every mode and ratio (default 3: each cell reads 'holds k/3')")
    ap.add_argument("--first-run", type=int, default=0,
                    help="index of the first run (to add runs to the kept raw data)")
    ap.add_argument("--render-only", action="store_true",
                    help="only render density.md/png from the runs kept in "
                    "results/raw/density")
    ap.add_argument("--out", type=Path, default=RESULTS / "density.md")
    args = ap.parse_args(argv)
    if not args.render_only:
        RAW.mkdir(parents=True, exist_ok=True)
        cells = [(mode, ratio) for mode in args.mode or list(MODES)
                 for ratio in ([1.0] if mode == "nolimit" else (args.ratio or [1.5]))]
        todo = [(m, q, i) for i in range(args.first_run, args.first_run + args.runs)
                for m, q in cells]
        for n, (mode, ratio, index) in enumerate(todo, 1):
            say(f"run {n}/{len(todo)}: {mode} x{ratio:g} #{index}")
            r = run(mode, ratio, args.warm_s, args.measure_s, args.overhead_mib,
                    args.interval, index)
            with gzip.open(raw_path(r), "wt") as f:
                json.dump(r, f, separators=(",", ":"))
            s = summarize(r)
            say(f"{label(r)} #{index}: lost {s['lost']}, cgroup OOM {s['cg_oom']}, guest OOM "
                f"{s['guest_oom']}, TPS {s['tps']:.1f}, p99 {s['p99_ms']:.0f} ms")
    write_results(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
