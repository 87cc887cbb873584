"""Act: apply decisions, or (dry-run) only report them.

Last stage of the pipeline, and the only one that differs between a live run and a dry run: the
daemon picks an actuator and nothing else changes. One guest's failure never stops the others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from autoballoon.core.decide import Action, Decision
from autoballoon.hypervisor import DomainGone, Hypervisor, HypervisorError
from autoballoon.logs import Repeating

log = logging.getLogger(__name__)

APPLIED = "applied"
DRY_RUN = "dry-run"


class Actuator(Protocol):
    def apply(self, decisions: Iterable[Decision]) -> dict[str, str]:
        """Per guest acted upon: APPLIED, DRY_RUN, or an error message."""
        ...


class LiveActuator:
    def __init__(self, hypervisor: Hypervisor) -> None:
        self.hypervisor = hypervisor
        self.failing = Repeating(log)  # a resize refused at every tick: not one line per tick

    def apply(self, decisions: Iterable[Decision]) -> dict[str, str]:
        results: dict[str, str] = {}
        for d in decisions:
            if d.action is Action.HOLD:
                continue
            key = f"resize {d.guest}"
            try:
                self.hypervisor.set_balloon_kib(d.guest, d.target_kib)
                results[d.guest] = APPLIED
                self.failing.ended(key, f"guest {d.guest}: resizing works again")
            except DomainGone as err:
                results[d.guest] = f"guest gone: {err}"
            except HypervisorError as err:
                self.failing.happened(
                    key,
                    logging.ERROR,
                    f"guest {d.guest}: setting the balloon to {d.target_kib} KiB failed: {err}",
                )
                results[d.guest] = f"error: {err}"
        return results


class DryRunActuator:
    """Calls no setter: the decisions are reported as what would have been done."""

    def apply(self, decisions: Iterable[Decision]) -> dict[str, str]:
        return {d.guest: DRY_RUN for d in decisions if d.action is not Action.HOLD}
