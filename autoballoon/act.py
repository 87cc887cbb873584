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

    def apply(self, decisions: Iterable[Decision]) -> dict[str, str]:
        results: dict[str, str] = {}
        for d in decisions:
            if d.action is Action.HOLD:
                continue
            try:
                self.hypervisor.set_balloon_kib(d.guest, d.target_kib)
                results[d.guest] = APPLIED
            except DomainGone as err:
                results[d.guest] = f"guest gone: {err}"
            except HypervisorError as err:
                log.error(
                    "guest %s: setting the balloon to %d KiB failed: %s", d.guest, d.target_kib, err
                )
                results[d.guest] = f"error: {err}"
        return results


class DryRunActuator:
    """Calls no setter: the decisions are reported as what would have been done."""

    def apply(self, decisions: Iterable[Decision]) -> dict[str, str]:
        return {d.guest: DRY_RUN for d in decisions if d.action is not Action.HOLD}
