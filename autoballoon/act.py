"""Act: apply decisions, or (dry-run) only report them.

Last stage of the pipeline, and the only one that differs between a live run and a dry run: the
daemon picks an actuator and nothing else changes. One guest's failure never stops the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from autoballoon.core.decide import Action, Decision
from autoballoon.hypervisor import DomainGone, Hypervisor, HypervisorError
from autoballoon.logs import Repeating
from autoballoon.report import APPLIED, DONE, DRY_RUN, HELD, Outcome, dry_run

log = logging.getLogger(__name__)

__all__ = ["APPLIED", "DRY_RUN", "Actuator", "DryRunActuator", "LiveActuator"]


class Actuator(Protocol):
    def apply(self, decisions: Sequence[Decision]) -> list[Outcome]:
        """One outcome per decision, in the decisions' order: held, applied, dry-run, or
        failed and why."""
        ...


class LiveActuator:
    def __init__(self, hypervisor: Hypervisor) -> None:
        self.hypervisor = hypervisor
        self.failing = Repeating(log)  # a resize refused at every tick: not one line per tick

    def apply(self, decisions: Sequence[Decision]) -> list[Outcome]:
        return [self._apply(d) for d in decisions]

    def _apply(self, d: Decision) -> Outcome:
        if d.action is Action.HOLD:
            return HELD
        key = f"resize {d.guest}"
        try:
            self.hypervisor.set_balloon_kib(d.guest, d.target_kib)
        except DomainGone as err:
            return Outcome.failed(f"guest gone: {err}")
        except HypervisorError as err:
            self.failing.happened(
                key,
                logging.ERROR,
                f"guest {d.guest}: setting the balloon to {d.target_kib} KiB failed: {err}",
            )
            return Outcome.failed(f"error: {err}")
        self.failing.ended(key, f"guest {d.guest}: resizing works again")
        return DONE


class DryRunActuator:
    """Calls no setter: the decisions are reported as what would have been done."""

    def apply(self, decisions: Sequence[Decision]) -> list[Outcome]:
        return dry_run(decisions)
