"""Benchmark 1: memory reclaimed versus harm to guests, on real lab guests.

    python -m benchmarks.lab [--quick] [--scenarios mixed,spike,thrash]
                             [--modes none,off,qmp] [--interval 2] [--out DIR]
    python -m benchmarks.lab --analyze-only benchmarks/results/tmp/lab-raw.json

Every scenario (a set of lab guests with fixed workloads) runs once per mode, each run on freshly
booted guests (all at their maximum, workload clocks restarted), for the same duration:

- ``none``: no controller. The daemon's controller runs in ``observe`` mode: it reads the guests
  (with the 6.12 counters) and classifies them every tick, and never changes a balloon.
- ``off``: autoballoon with ``extended_stats = "off"``: libvirt's standard balloon statistics
  only (free/available memory, swap, faults), the signals classic controllers use.
- ``qmp``: autoballoon as shipped (``extended_stats = "qmp"``: the Linux 6.12 pressure counters).

The controller is the real one (``autoballoon.daemon.Controller`` over ``LibvirtHypervisor`` and
the live actuator), ticked every ``--interval`` seconds in this process. Policy: the shipped
preset ``policies/presets/aggressive.toml`` (proactive mode). The default policy is on-demand: it
takes memory only while the host is short (MemAvailable under 20 % of MemTotal), which an idle
24 GiB lab host never is, so it would take nothing here (``benchmarks.lab.ondemand`` makes the
host short on purpose).

What is measured comes from two independent sides: the host (balloon size and QEMU RSS through
libvirt, the controller's own decisions and classes) and the guests themselves (the ABREPORT
line each lab guest prints every second on its serial console: MemTotal, MemAvailable, oom_kill,
allocstall, pgscan/pgsteal). Results go to ``<out>/lab.md`` and ``<out>/lab.png``; the raw data
of every run to ``<out>/tmp/lab-raw.json`` (not committed), which ``--analyze-only`` turns into
the report again without the lab.

The parts, each readable alone: ``scenarios`` (what runs), ``runner`` (running it),
``analysis`` (raw data to numbers), ``render`` (lab.md), ``plot`` (lab.png).

The lab is shared: every stretch that has guests up holds the lab lock (one stretch per
scenario, under 10 minutes each). Guests are named ``ab-lab-b-*``; only those are destroyed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine, say
from benchmarks.lab.analysis import RAW_FORMAT, RawDataError, analyze, analyze_run
from benchmarks.lab.plot import plot
from benchmarks.lab.render import _f, render, short
from benchmarks.lab.runner import run_retrying
from benchmarks.lab.scenarios import MODES, Scenario, scenarios
from contrib.lab import lab_lock, lock


def write_outputs(raw: Mapping[str, Any], out: Path) -> None:
    res = analyze(raw)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lab.md").write_text(render(raw, res))
    plot(raw, res, out / "lab.png")
    say(f"wrote {out / 'lab.md'} and {out / 'lab.png'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short smoke run (about 4 minutes)")
    ap.add_argument("--scenarios", default="mixed,spike,thrash")
    ap.add_argument("--modes", default="none,off,qmp")
    ap.add_argument("--interval", type=float, default=2.0, help="tick interval (2 s)")
    ap.add_argument("--duration", type=float, help="override every scenario's run length (s)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where lab.md/lab.png go")
    ap.add_argument("--raw", type=Path, help="raw data file (default OUT/tmp/lab-raw.json)")
    ap.add_argument("--analyze-only", type=Path, metavar="RAW",
                    help="only turn a raw data file into lab.md/lab.png")
    args = ap.parse_args(argv)

    if args.analyze_only:
        try:
            write_outputs(json.loads(args.analyze_only.read_text()), args.out)
        except RawDataError as err:
            say(f"{args.analyze_only}: {err}")
            return 2
        return 0
    wanted = args.scenarios.split(",")
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        ap.error(f"unknown mode(s) {sorted(unknown)}; choose from {list(MODES)}")
    chosen = [s for s in scenarios(args.quick) if s.name in wanted]
    if args.duration:
        chosen = [Scenario(s.name, s.what, s.guests, args.duration) for s in chosen]
    raw_path = args.raw or args.out / "tmp" / "lab-raw.json"
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {
        "format": RAW_FORMAT,
        "machine": machine(),
        "quick": args.quick,
        "descriptions": {s.name: s.what for s in chosen},
        "runs": [],
    }
    started = time.monotonic()
    for sc in chosen:
        with lab_lock(f"bench_lab {sc.name}"):
            for mode in modes:
                say(f"{sc.name} / {mode}: booting {len(sc.guests)} guest(s), then "
                    f"{sc.duration_s:.0f} s")
                run = run_retrying(sc, mode, args.interval)
                raw["runs"].append(run)
                res = analyze_run(run, next((r for r in raw["runs"] if r["scenario"] ==
                                             sc.name and r["mode"] == "none"), None))
                for name, g in res.items():
                    say(f"  {short(name):14} reclaimed avg {_f(g['reclaimed_avg_mib'])} "
                        f"MiB (2nd half {_f(g['reclaimed_2nd_mib'])}, oracle "
                        f"{_f(g['oracle_mib'])}), final {_f(g['final_mib'])} MiB, "
                        f"oom {g['oom_kills']}, stalls {g['stalls']}, "
                        f"flips {g['direction_changes']}")
                raw_path.write_text(json.dumps(raw))
    raw["wall_s"] = time.monotonic() - started
    raw["lock_wait_s"] = lock.waited_s
    raw_path.write_text(json.dumps(raw))
    write_outputs(raw, args.out)
    say(f"bench_lab done in {raw['wall_s'] / 60:.1f} min; raw data {raw_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
