"""Running one scenario in one mode: fresh guests, the daemon's controller ticking in this
process, the guests' own ABREPORT lines collected alongside, raw data out.

The controller is the real one (``autoballoon.daemon.Controller`` over ``LibvirtHypervisor``
and the live actuator); the policy is the shipped aggressive preset. Nothing is analysed here.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

from autoballoon.backends.libvirt import LibvirtHypervisor
from autoballoon.config import DaemonConfig
from autoballoon.core.policy import PolicySet
from autoballoon.daemon import Controller
from autoballoon.report import TickReport
from benchmarks.common import down_fresh, other_domains, say
from benchmarks.lab.scenarios import Scenario
from contrib.lab import Lab, LabError, parse_report, preset_policies
from contrib.lab.policies import preset_path


class ConsolePoller:
    """Reads the guests' ABREPORT lines as they appear and stamps them with host time."""

    def __init__(self, guests: Sequence[Any], period_s: float = 0.5) -> None:
        self._parse = parse_report
        self.guests = list(guests)
        self.period_s = period_s
        self.reports: dict[str, list[tuple[float, dict[str, float]]]] = {
            g.name: [] for g in self.guests
        }
        self._offsets = {g.name: 0 for g in self.guests}
        self._partial = {g.name: "" for g in self.guests}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="abreport", daemon=True)

    def poll(self) -> None:
        now = time.time()
        for g in self.guests:
            try:
                with g.console_path.open("rb") as fh:
                    fh.seek(self._offsets[g.name])
                    data = fh.read()
            except OSError:
                continue
            self._offsets[g.name] += len(data)
            text = self._partial[g.name] + data.decode(errors="replace")
            *lines, self._partial[g.name] = text.split("\n")
            for line in lines:
                rep = self._parse(line)
                if rep is not None:
                    self.reports[g.name].append((now, rep))

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.poll()

    def start(self) -> None:
        self.poll()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()


def compact_tick(rep: TickReport) -> dict[str, Any]:
    """One tick of raw data: when, how long, the tick's error, and each guest's ``GuestRecord``
    (its ``to_json``, the same object the status file shows)."""
    return {"t": rep.t, "dur": rep.duration_s, "error": rep.error,
            "guests": {r.name: r.to_json() for r in rep.guests}, "skipped": dict(rep.skipped)}


def run_one(
    lab: Any, sc: Scenario, mode: str, interval_s: float, policies: PolicySet | None = None
) -> dict[str, Any]:
    """Boot the scenario's guests fresh, run one mode for the scenario's duration, tear down.

    ``policies``: what the controller runs (default: the aggressive preset; ``none`` always
    runs it in observe mode)."""
    specs = [g.spec(sc.name) for g in sc.guests]
    names = [s.domain_name for s in specs]
    lab.down(names)  # our own leftovers only
    t_boot = time.time()
    guests = lab.up(specs)
    boot_s = time.time() - t_boot
    for g in guests:  # two reports each: a baseline and proof the workload runs
        g.wait_for(lambda x: len(x.console_reports()) >= 2, timeout=60, what="two ABREPORTs")
    poller = ConsolePoller(guests)
    poller.start()
    start = {g.name: g.memory_stats() for g in guests}
    others = other_domains(lab.conn)

    extended = "off" if mode == "off" else "qmp"
    if mode == "none":
        policies = preset_policies(mode="observe")
    elif policies is None:
        policies = preset_policies()
    hv = LibvirtHypervisor(extended_stats=extended, read_budget_s=min(2.0, interval_s / 2))
    config = DaemonConfig(
        interval_s=interval_s,
        policy_dir=preset_path().parent,
        extended_stats=extended,
        include=tuple(names),
    )
    controller = Controller(config, hv, policies)
    ticks: list[dict[str, Any]] = []
    errors: list[str] = []
    t0 = time.time()
    deadline = time.monotonic() + sc.duration_s
    next_t = time.monotonic()
    try:
        while time.monotonic() < deadline:
            try:
                ticks.append(compact_tick(controller.tick()))
            except Exception as err:  # record it and keep going: a benchmark reports, not dies
                errors.append(repr(err))
            next_t += interval_s
            time.sleep(max(next_t - time.monotonic(), 0.0))
    finally:
        t_end = time.time()
        hv.close()
        poller.stop()
    end: dict[str, dict[str, int]] = {}
    for g in guests:
        for attempt in range(3):  # libvirtd may be restarting (someone else's test)
            try:
                end[g.name] = g.memory_stats()
                break
            except Exception as err:
                if attempt == 2:
                    errors.append(f"{g.name}: memoryStats at the end: {err!r}")
                    end[g.name] = {}
                time.sleep(2)
    others = sorted(set(others) | set(other_domains(lab.conn)))
    seen = [tk["guests"] for tk in ticks if not tk["error"]]
    vanished = sorted({n for g in seen for n in names if n not in g})
    if vanished:
        errors.append(f"guest(s) vanished or uncontrolled during the run: {vanished}")
    failed = sum(1 for tk in ticks if tk["error"])
    if failed:
        errors.append(f"{failed} of {len(ticks)} ticks could not read the host (libvirt down)")
    lab.down(names)
    return {
        "scenario": sc.name,
        "mode": mode,
        "interval_s": interval_s,
        "duration_s": sc.duration_s,
        "boot_s": boot_s,
        "t_boot": t_boot,
        "t0": t0,
        "t_end": t_end,
        "guests": {
            s.domain_name: {"role": g.role, "mem_mib": g.mem_mib, "workload": g.workload,
                            "kind": g.kind, "autodeflate": g.autodeflate}
            for s, g in zip(specs, sc.guests, strict=True)
        },
        "start": start,
        "end": end,
        "ticks": ticks,
        "reports": poller.reports,
        "other_domains": others,
        "errors": errors,
        "valid": not vanished and len(ticks) > 0 and failed <= 0.1 * len(ticks),
    }


def run_retrying(
    sc: Scenario, mode: str, interval_s: float, policies: PolicySet | None = None
) -> dict[str, Any]:
    """run_one on a fresh libvirt connection; once more if libvirt failed under it (someone
    restarting libvirtd) or the run lost guests or ticks."""
    import libvirt

    for attempt in (1, 2):
        lab = Lab()
        try:
            run = run_one(lab, sc, mode, interval_s, policies)
        except (libvirt.libvirtError, LabError) as err:
            if attempt == 2:
                raise
            say(f"  run failed ({err}); once more")
            with contextlib.suppress(libvirt.libvirtError, LabError):
                down_fresh([g.spec(sc.name).domain_name for g in sc.guests])
            time.sleep(5)
            continue
        finally:
            lab.close()
        if run["valid"] or attempt == 2:
            return run
        say(f"  run invalid ({'; '.join(run['errors'])}); once more")
    raise AssertionError("unreachable")

