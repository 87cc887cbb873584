"""The daemon: one tick = observe -> classify/decide (pure core) -> act -> report.

``Controller.tick`` is the whole pipeline for one tick and the unit the scheduler runs;
``run_daemon`` runs it under APScheduler until a signal asks it to stop. The loop sits above
observe, act and the sinks, and below the commands: the `run` command chooses the hypervisor
and builds the sinks, and the sinks see only report values (``autoballoon.report``), never the
controller. The controller never lets one guest's failure, a sink's failure or an unreachable
libvirt escape a tick: the loop keeps running, and a tick that cannot read the host makes no
decision at all.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

from autoballoon.act import Actuator, DryRunActuator, LiveActuator
from autoballoon.config import DaemonConfig, load_config
from autoballoon.core.decide import EngineState, step
from autoballoon.core.policy import PolicySet
from autoballoon.core.units import KIB_PER_MIB
from autoballoon.hypervisor import Hypervisor, HypervisorError, TransientError
from autoballoon.observe import GuestScope, Observer
from autoballoon.policyfiles import PolicyFileError, load_policy_dir
from autoballoon.report import Health, Sink, TickReport

log = logging.getLogger("autoballoon")


class Controller:
    """Holds the engine state between ticks and runs one tick at a time."""

    def __init__(
        self,
        config: DaemonConfig,
        hypervisor: Hypervisor,
        policies: PolicySet,
        *,
        dry_run: bool = False,
        actuator: Actuator | None = None,
        sinks: Sequence[Sink] = (),
        proc: Path = Path("/proc"),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        config_path: Path | None = None,
        cli_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.hypervisor = hypervisor
        self.policies = policies
        self.dry_run = dry_run
        self.actuator = actuator or (DryRunActuator() if dry_run else LiveActuator(hypervisor))
        self.sinks = list(sinks)
        self.observer = Observer(
            hypervisor, proc, GuestScope(config.include, config.exclude), config.host_memory_cgroup
        )
        self.clock = clock
        """The wall clock: what reports (status, log, trace) are stamped with."""
        self.monotonic = monotonic
        """The core's clock: orders samples and times rates and timers; never goes back."""
        self.config_path = config_path
        self.cli_overrides = dict(cli_overrides or {})
        self.state = EngineState()
        self.ticks = 0
        self.failed_ticks = 0
        self.overruns = 0
        self.last_report: TickReport | None = None
        self._lock = threading.Lock()
        self._reload_requested = False
        self._skip_reasons: dict[str, str] = {}

    # --- one tick ----------------------------------------------------------------------------
    def tick(self) -> TickReport:
        with self._lock:
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            return self._tick()

    def _tick(self) -> TickReport:
        # Two clocks read together: the core runs on the monotonic one, so a step of the wall
        # clock (NTP, an operator) neither repeats nor drops a guest's history; reports keep
        # wall time, and each guest's statistics age is measured on the wall clock, QEMU's.
        t = self.clock()
        now = self.monotonic()
        started = time.monotonic()
        try:
            obs = self.observer.observe(now, wall_now=t)
        except (HypervisorError, OSError) as err:
            self.failed_ticks += 1
            what = "libvirt unreachable" if isinstance(err, TransientError) else "cannot observe"
            log.error("%s (%s): tick skipped, no decision made", what, err)
            failed = TickReport(
                t,
                time.monotonic() - started,
                self.dry_run,
                None,
                {},
                [],
                {},
                {},
                {},
                error=str(err),
            )
            return self._publish(failed)
        decisions, self.state = step(
            now, obs.host, obs.samples, self.state, self.policies, open_loop=self.dry_run
        )
        results = self.actuator.apply(decisions)
        self._log_skips(obs.skipped)
        self.ticks += 1
        report = TickReport(
            t,
            time.monotonic() - started,
            self.dry_run,
            obs.host,
            obs.samples,
            decisions,
            results,
            obs.skipped,
            obs.sources,
            obs.rss_kib,
            self.state.host_verdict,
            policies=self.policies,
        )
        return self._publish(report)

    def health(self) -> Health:
        """The loop's counters as a value, in words that do not depend on the backend."""
        hv = self.hypervisor
        return Health(
            ticks=self.ticks,
            failed_ticks=self.failed_ticks,
            overruns=self.overruns,
            hypervisor_errors=getattr(hv, "errors", None),
            hypervisor_reconnects=getattr(hv, "reconnects", None),
        )

    def _publish(self, report: TickReport) -> TickReport:
        self.last_report = report
        health = self.health()
        for sink in self.sinks:
            try:
                sink.on_tick(report, health)
            except Exception:  # a broken sink must never stop control
                log.exception("reporting to %s failed", type(sink).__name__)
        return report

    def _log_skips(self, skipped: Mapping[str, str]) -> None:
        """Say once why a guest is not controlled, and again only when the reason changes."""
        for name, why in skipped.items():
            if self._skip_reasons.get(name) != why:
                log.info("guest %s not controlled: %s", name, why)
        self._skip_reasons = dict(skipped)

    # --- reload and stop ---------------------------------------------------------------------
    def request_reload(self) -> None:
        """Reload at the start of the next tick (safe to call from a signal handler)."""
        self._reload_requested = True

    def reload(self) -> bool:
        """Re-read config and policies; on any error keep the last good ones and say so."""
        try:
            config = self.config
            if self.config_path is not None:
                config = load_config(self.config_path, self.cli_overrides)
            policies = load_policy_dir(config.policy_dir, strict_modes=config.strict_modes)
        except (PolicyFileError, OSError) as err:
            log.error("reload failed, keeping the last good configuration and policies:\n%s", err)
            return False
        if config.uri != self.config.uri:
            log.warning("uri changed to %s: takes effect after a restart", config.uri)
        self.config = config
        self.observer.host_cgroup = config.host_memory_cgroup
        self.policies = policies
        log.info("reloaded: %s, %d per-VM policy file(s)", config.policy_dir, len(policies.layers))
        return True

    def finish(self) -> None:
        """Clean stop: wait for the running tick, apply on_stop, close the sinks."""
        with self._lock:
            if self.config.on_stop == "deflate" and not self.dry_run:
                self._deflate_all()
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception:
                    log.exception("closing %s failed", type(sink).__name__)

    def _deflate_all(self) -> None:
        """on_stop = "deflate": every guest the daemon may resize back to its policy's maximum.

        The policy decides as it does at every tick: a guest opted out, in observe mode or whose
        policy cannot be resolved is never resized, and ``max_mib`` caps the size given back.
        """
        try:
            reading = self.hypervisor.read(self.observer.scope)
        except HypervisorError as err:
            log.error("on_stop = deflate: cannot read guests (%s); balloons left as they are", err)
            return
        for g in reading.guests:
            try:
                p = self.policies.resolve_cached(g.name, g.uuid)
            except ValueError as err:
                log.warning(
                    "on_stop = deflate: guest %s left as it is (policy error: %s)", g.name, err
                )
                continue
            if not p.enabled or p.mode == "observe":
                why = "opted out (enabled = false)" if not p.enabled else "observe mode"
                log.info("on_stop = deflate: guest %s left as it is (%s)", g.name, why)
                continue
            target = p.max_kib(g.max_kib)
            if g.actual_kib >= target:
                continue
            try:
                self.hypervisor.set_balloon_kib(g.name, target)
                log.info(
                    "on_stop = deflate: guest %s back to %d MiB", g.name, target // KIB_PER_MIB
                )
            except HypervisorError as err:
                log.error("on_stop = deflate: guest %s: %s", g.name, err)


STOP_POLL_S = 0.2
"""How often the main thread looks for a stop request while the scheduler runs the ticks."""


def _wait_for_stop(why_stopped: list[str], duration_s: float | None) -> None:
    """Sleep in short steps until a signal handler has noted a stop, or ``duration_s`` is over.

    Not one long wait on an event: the kernel may hand a process's signal to any thread that
    does not block it (the scheduler's, libvirt's event loop), and Python then runs the handler
    only when the main thread next runs Python code. A main thread asleep until the stop request
    would never see it, and the daemon would run until SIGKILL.
    """
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while not why_stopped:
        step = STOP_POLL_S
        if deadline is not None:
            step = min(step, deadline - time.monotonic())
            if step <= 0:
                return
        time.sleep(step)


def run_daemon(
    config: DaemonConfig,
    hypervisor: Hypervisor,
    make_sinks: Callable[[PolicySet], Sequence[Sink]] = lambda _policies: [],
    *,
    dry_run: bool = False,
    once: bool = False,
    duration_s: float | None = None,
    config_path: Path | None = None,
    cli_overrides: Mapping[str, Any] | None = None,
) -> int:
    """Run the loop until a stop request (or ``duration_s``); returns the process exit code.

    The command that runs the daemon chooses the backend (``hypervisor``) and the sinks;
    ``make_sinks`` is called with the policies once they have loaded (a trace records them),
    and may refuse to start by raising ``ValueError`` or ``OSError`` (a --record file that is
    not a trace).
    """
    # Signals first: a SIGTERM during start-up is a clean stop too, never a kill. The handler
    # only notes the request, taking no lock; the main thread polls for it (see below).
    why_stopped: list[str] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        why_stopped.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until there is something to reload
    log.info(
        "starting%s with %s",
        " (dry-run: nothing will be changed)" if dry_run else "",
        " ".join(f"{k}={v}" for k, v in config.model_dump().items()),
    )
    try:
        policies = load_policy_dir(config.policy_dir, strict_modes=config.strict_modes)
    except PolicyFileError as err:
        log.error("refusing to start: invalid policy:\n%s", err)
        return 1
    log.info(
        "policies: %s (mode %s) + %d per-VM file(s)",
        policies.default_source,
        policies.default.mode,
        len(policies.layers),
    )
    try:
        sinks = make_sinks(policies)
    except (ValueError, OSError) as err:  # e.g. --record names a file that is not a trace
        log.error("refusing to start: %s", err)
        return 1
    controller = Controller(
        config,
        hypervisor,
        policies,
        dry_run=dry_run,
        sinks=sinks,
        config_path=config_path,
        cli_overrides=cli_overrides,
    )
    if once:
        # Rates need two samples: read, wait one interval, then decide and act once.
        controller.tick()
        time.sleep(config.interval_s)
        report = controller.tick()
        controller.finish()
        hypervisor.close()
        return 1 if report.error else 0

    # The scheduler runs ticks in its own thread; the main thread only waits for a stop
    # request (signal or --duration), then lets the running tick finish.
    scheduler = BackgroundScheduler()

    def overrun(_event: JobExecutionEvent) -> None:
        controller.overruns += 1
        if controller.overruns in (1, 10) or controller.overruns % 100 == 0:
            log.warning(
                "a tick took longer than interval_s=%.1f s; the late tick was dropped, not "
                "queued (%d so far)",
                config.interval_s,
                controller.overruns,
            )

    signal.signal(signal.SIGHUP, lambda *_: controller.request_reload())
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    scheduler.add_listener(overrun, EVENT_JOB_MAX_INSTANCES)
    scheduler.add_job(
        controller.tick,
        "interval",
        seconds=config.interval_s,
        id="tick",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
        next_run_time=datetime.now(),
    )
    if not why_stopped:
        scheduler.start()
        _wait_for_stop(why_stopped, duration_s)
        why = why_stopped[0] if why_stopped else "duration reached"
        log.info("%s: stopping after the current tick", why)
        scheduler.shutdown(wait=True)
    controller.finish()
    hypervisor.close()
    log.info("stopped after %d tick(s)", controller.ticks)
    return 0
