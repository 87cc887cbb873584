"""The real parts the `run` command gives the daemon: the libvirt backend and the sinks.

Top layer, beside the commands: the loop (``autoballoon.daemon``) is handed a hypervisor and a list
of sinks and knows neither how they are built nor which ones there are. Kept apart from
``commands/run_command.py`` so that the other commands start without importing libvirt, APScheduler
or prometheus-client.
"""

from __future__ import annotations

from pathlib import Path

from autoballoon.backends.libvirt import LibvirtHypervisor
from autoballoon.config import DaemonConfig
from autoballoon.core.policy import PolicySet
from autoballoon.metrics import MetricsSink
from autoballoon.report import Sink
from autoballoon.sinks import LogSink, TraceSink
from autoballoon.status import StatusSink


def build_hypervisor(config: DaemonConfig, *, dry_run: bool) -> LibvirtHypervisor:
    """The libvirt backend the config describes (it connects on first use). In dry-run it
    calls no setter at all. One tick waits ``config.read_budget_s()`` for the statistics."""
    return LibvirtHypervisor(
        config.uri,
        extended_stats=config.extended_stats,
        stats_period_s=config.stats_period_s,
        dry_run=dry_run,
        read_budget_s=config.read_budget_s(),
    )


def build_sinks(
    config: DaemonConfig,
    policies: PolicySet | None = None,
    *,
    record: Path | None,
    dry_run: bool = False,
) -> list[Sink]:
    """The log always; the status file always; metrics when ``metrics_port`` is set; a trace
    with ``--record`` (which keeps ``policies`` and ``dry_run``, for replay). Raises
    ``ValueError`` or ``OSError`` when one cannot be set up."""
    sinks: list[Sink] = [LogSink(), StatusSink.for_config(config)]
    if config.metrics_port:
        sinks.append(MetricsSink(config.metrics_address, config.metrics_port))
    if record is not None:
        sinks.append(TraceSink(record, config.interval_s, policies, dry_run))
    return sinks
