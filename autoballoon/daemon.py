"""The daemon: one tick = observe -> classify/decide (pure core) -> act -> report.

``Controller.tick`` is the whole pipeline for one tick and the unit the scheduler runs;
``run_daemon`` runs it under APScheduler until a signal asks it to stop. The loop sits above
observe, act and the sinks, and below the commands: the `run` command chooses the hypervisor
and builds the sinks, and the sinks see only report values (``autoballoon.report``), never the
controller. The controller never lets one guest's failure, a sink's failure or an unreachable
libvirt escape a tick: the loop keeps running, and a tick that cannot read the host makes no
decision at all.

At start, ``run_daemon`` refuses (with one line and an exit code from ``autoballoon.exits``)
what no retry can fix: invalid policies, a second controller on the same URI (``HostLock``), a
URI that cannot be opened. Under systemd it reports READY=1 once running, and each tick pets
the watchdog (``NotifySink``). A reload (SIGHUP) applies every setting that can change live and
names the ones that need a restart (``config.LIVE``).
"""

from __future__ import annotations

import logging
import os
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

from autoballoon import exits
from autoballoon.act import Actuator, DryRunActuator, LiveActuator
from autoballoon.config import DaemonConfig, diff_config, load_config
from autoballoon.core.decide import EngineState, step
from autoballoon.core.policy import PolicySet
from autoballoon.hostlock import HostLock, LockHeld
from autoballoon.hypervisor import (
    CannotConnect,
    Connectable,
    Hypervisor,
    HypervisorError,
    TransientError,
)
from autoballoon.logs import Repeating, setup_logging
from autoballoon.observe import GuestScope, Observer
from autoballoon.policyfiles import PolicyFileError, load_policy_dir
from autoballoon.release import apply_release, plan_release
from autoballoon.report import Health, Sink, TickReport, assemble_rows
from autoballoon.sdnotify import NotifySink, notify, watchdog_s

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
        self.repeating = Repeating(log)
        self.reschedule: Callable[[float], None] | None = None
        """Set by ``run_daemon``: moves the tick job to a new interval (a reload's interval_s)."""

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
            self.repeating.happened(
                "observe", logging.ERROR, f"{what} ({err}): tick skipped, no decision made"
            )
            failed = TickReport(t, time.monotonic() - started, self.dry_run, None, error=str(err))
            return self._publish(failed)
        self.repeating.ended("observe", "host and guests readable again: ticks resumed")
        decisions, self.state = step(
            now, obs.host, obs.samples, self.state, self.policies, open_loop=self.dry_run
        )
        outcomes = self.actuator.apply(decisions)
        duration_s = time.monotonic() - started
        self._log_skips(obs.skipped)
        self.ticks += 1
        report = TickReport(
            t,
            duration_s,
            self.dry_run,
            obs.host,
            assemble_rows(obs.guests, decisions, outcomes),
            obs.skipped,
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
        """Note a reload (safe to call from a signal handler); ``reload_if_requested`` or the
        next tick does it."""
        self._reload_requested = True

    def reload_if_requested(self) -> None:
        """Reload now if one was asked for, between ticks (the main thread polls this, so a
        reload never waits for the next tick of a long interval)."""
        if self._reload_requested:
            with self._lock:
                if self._reload_requested:
                    self._reload_requested = False
                    self.reload()

    def reload(self) -> bool:
        """Re-read config and policies; apply what can change live, name what cannot.

        On any error keep the last good config and policies, and say so. Never says "reloaded"
        of a change it did not apply: the line lists the settings applied and, apart, the ones
        that need a restart (``config.LIVE`` says which are which).
        """
        try:
            config = self.config
            if self.config_path is not None:
                config = load_config(self.config_path, self.cli_overrides)
            policies = load_policy_dir(config.policy_dir, strict_modes=config.strict_modes)
        except (PolicyFileError, OSError) as err:
            log.error("reload failed, keeping the last good configuration and policies:\n%s", err)
            return False
        change = diff_config(self.config, config)
        live = {k: new for k, (_old, new) in change.applied.items()}
        # Settings needing a restart keep their running values: the config in use is the old
        # one with only the live settings replaced, so status and logs say what really runs.
        self.config = self.config.model_copy(update=live)
        self._apply_live(set(live))
        policies_changed = policies != self.policies
        self.policies = policies
        parts = [f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in change.applied.items()]
        if policies_changed:
            parts.append(f"policies ({config.policy_dir}, {len(policies.layers)} per-VM file(s))")
        if parts:
            line = "reload: applied " + ", ".join(parts)
        else:
            line = "reload: nothing applied" if change.need_restart else "reload: nothing changed"
        if change.need_restart:
            waiting = ", ".join(
                f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in change.need_restart.items()
            )
            line += f"; {'not applied, ' if parts else ''}need a restart: {waiting}"
            log.warning("%s", line)
        else:
            log.info("%s", line)
        return True

    def _apply_live(self, changed: set[str]) -> None:
        """Put the live settings of ``self.config`` that ``changed`` to work."""
        c = self.config
        if changed & {"include", "exclude"}:
            self.observer.scope = GuestScope(c.include, c.exclude)
        if "host_memory_cgroup" in changed:
            self.observer.host_cgroup = c.host_memory_cgroup
        if changed & {"log_format", "log_level", "log_priority"}:
            setup_logging(c.log_format, c.log_level, c.log_priority)
        if "interval_s" in changed:
            if self.reschedule is not None:
                self.reschedule(c.interval_s)
            if hasattr(self.hypervisor, "read_budget_s"):  # a tick must not outlast its interval
                self.hypervisor.read_budget_s = c.read_budget_s()
            for sink in self.sinks:
                retime = getattr(sink, "retime", None)
                if retime is not None:
                    retime(c.interval_s)

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
        """on_stop = "deflate": every guest the daemon may resize back to its policy's maximum
        (``autoballoon.release``: the policies decide as they do at every tick)."""
        try:
            reading = self.hypervisor.read(self.observer.scope)
        except HypervisorError as err:
            log.error("on_stop = deflate: cannot read guests (%s); balloons left as they are", err)
            return
        steps = plan_release(reading.guests, self.policies)
        results = apply_release(self.hypervisor, steps)
        for s in steps:
            if s.to_kib is not None and results.get(s.name) != "applied":
                log.error("on_stop = deflate: guest %s: %s", s.name, results.get(s.name))
            elif s.why != "already at its maximum":
                log.info("on_stop = deflate: %s", s.line())


def _show(value: object) -> str:
    """A setting's value in a reload line: lists as [a, b], the rest as it prints."""
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


STOP_POLL_S = 0.2
"""How often the main thread looks for a stop request while the scheduler runs the ticks."""


def _wait_for_stop(
    why_stopped: list[str], duration_s: float | None, poll: Callable[[], None] = lambda: None
) -> None:
    """Sleep in short steps until a signal handler has noted a stop, or ``duration_s`` is over.

    Not one long wait on an event: the kernel may hand a process's signal to any thread that
    does not block it (the scheduler's, libvirt's event loop), and Python then runs the handler
    only when the main thread next runs Python code. A main thread asleep until the stop request
    would never see it, and the daemon would run until SIGKILL.
    """
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while not why_stopped:
        poll()
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
    """Run the loop until a stop request (or ``duration_s``); returns the process exit code
    (``autoballoon.exits``).

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
    lock = HostLock(config.lock_path())
    try:
        lock.acquire()
    except LockHeld as err:
        log.error("refusing to start: %s; one controller per host and URI", err)
        return exits.LOCKED
    except OSError as err:
        log.error("refusing to start: cannot take the lock %s: %s", lock.path, err)
        return exits.LOCKED
    try:
        return _run_locked(
            config,
            hypervisor,
            make_sinks,
            why_stopped,
            dry_run=dry_run,
            once=once,
            duration_s=duration_s,
            config_path=config_path,
            cli_overrides=cli_overrides,
        )
    finally:
        lock.release()


def _start_error(err: HypervisorError) -> int:
    """One line for a URI that cannot be opened at start, and the exit code for it."""
    if isinstance(err, CannotConnect):
        log.error("refusing to start: %s (check --uri / uri, and the credentials)", err)
        return exits.LIBVIRT_REFUSED
    log.error("refusing to start: libvirt does not answer: %s (is libvirtd running?)", err)
    return exits.LIBVIRT_UNREACHABLE


def _run_locked(
    config: DaemonConfig,
    hypervisor: Hypervisor,
    make_sinks: Callable[[PolicySet], Sequence[Sink]],
    why_stopped: list[str],
    *,
    dry_run: bool,
    once: bool,
    duration_s: float | None,
    config_path: Path | None,
    cli_overrides: Mapping[str, Any] | None,
) -> int:
    log.info(
        "starting%s with %s",
        " (dry-run: nothing will be changed)" if dry_run else "",
        " ".join(f"{k}={v}" for k, v in config.model_dump().items()),
    )
    try:
        policies = load_policy_dir(config.policy_dir, strict_modes=config.strict_modes)
    except PolicyFileError as err:
        log.error("refusing to start: invalid policy:\n%s", err)
        return exits.CONFIG
    log.info(
        "policies: %s (mode %s) + %d per-VM file(s)",
        policies.default_source,
        policies.default.mode,
        len(policies.layers),
    )
    if isinstance(hypervisor, Connectable):
        try:
            hypervisor.connect()
        except HypervisorError as err:
            hypervisor.close()
            return _start_error(err)
    try:
        sinks = [*make_sinks(policies), NotifySink()]
    except (ValueError, OSError) as err:  # e.g. --record names a file that is not a trace
        log.error("refusing to start: %s", err)
        hypervisor.close()
        return exits.CONFIG
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
        return exits.FAILED if report.error else exits.OK

    # The scheduler runs ticks in its own thread; the main thread only waits for a stop
    # request (signal or --duration), then lets the running tick finish.
    scheduler = BackgroundScheduler()

    def overrun(_event: JobExecutionEvent) -> None:
        controller.overruns += 1
        if controller.overruns in (1, 10) or controller.overruns % 100 == 0:
            log.warning(
                "a tick took longer than interval_s=%.1f s; the late tick was dropped, not "
                "queued (%d so far)",
                controller.config.interval_s,
                controller.overruns,
            )

    def reschedule(interval_s: float) -> None:
        scheduler.reschedule_job("tick", trigger="interval", seconds=interval_s)
        _extend_watchdog(interval_s)

    controller.reschedule = reschedule
    signal.signal(signal.SIGHUP, lambda *_: controller.request_reload())
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
        _extend_watchdog(config.interval_s)
        notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=started; first tick under way")
        _wait_for_stop(why_stopped, duration_s, controller.reload_if_requested)
        why = why_stopped[0] if why_stopped else "duration reached"
        log.info("%s: stopping after the current tick", why)
        notify(f"STOPPING=1\nSTATUS=stopping ({why})")
        scheduler.shutdown(wait=True)
    controller.finish()
    hypervisor.close()
    log.info("stopped after %d tick(s)", controller.ticks)
    return exits.OK


WATCHDOG_TICKS = 3
"""Ticks the watchdog waits for (plus ``SLOW_TICK_S``) before systemd counts the loop hung."""
SLOW_TICK_S = 20.0
"""More than a healthy tick takes: reads wait at most 2 s, each resize about as long."""


def _extend_watchdog(interval_s: float) -> None:
    """Make the unit's watchdog at least three ticks long: WatchdogSec in the unit fits the
    default interval, but an operator may set interval_s to minutes."""
    unit_s = watchdog_s()
    need_s = WATCHDOG_TICKS * interval_s + SLOW_TICK_S
    if unit_s is not None and unit_s < need_s:
        notify(f"WATCHDOG_USEC={int(need_s * 1e6)}")
        log.info(
            "watchdog extended from %.0f s to %.0f s for interval_s=%s", unit_s, need_s, interval_s
        )
