"""Running the real controller (libvirt adapter + pure core + live actuator) against lab guests."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autoballoon.backends.libvirt import LibvirtHypervisor
from autoballoon.config import DaemonConfig
from autoballoon.core.decide import Action, Decision
from autoballoon.core.policy import PolicySet
from autoballoon.daemon import Controller, TickReport

REPO = Path(__file__).resolve().parents[2]
INTERVAL_S = 2.0


@dataclass
class Run:
    """A controller ticking in a background thread, like the scheduler does."""

    names: Sequence[str]
    policies: PolicySet
    dry_run: bool = False
    interval_s: float = INTERVAL_S
    reports: list[TickReport] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hv = LibvirtHypervisor()
        config = DaemonConfig(
            interval_s=self.interval_s, policy_dir=REPO / "policies", include=tuple(self.names)
        )
        self.controller = Controller(config, self.hv, self.policies, dry_run=self.dry_run)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.reports.append(self.controller.tick())
            except BaseException as err:  # the test fails on any escape from a tick
                self.errors.append(err)
                return
            next_t += self.interval_s
            self._stop.wait(max(next_t - time.monotonic(), 0))

    def __enter__(self) -> Run:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.hv.close()

    def decisions(self, guest: str) -> list[Decision]:
        """The guest's decisions, each stamped with its tick's wall-clock time (the report's),
        so tests compare them with ``time.time()``; the core itself runs on a monotonic clock."""
        return [d._replace(t=r.t) for r in self.reports for d in r.decisions if d.guest == guest]

    def changes(self, guest: str) -> list[Decision]:
        return [d for d in self.decisions(guest) if d.action is not Action.HOLD]


def direction_changes(decisions: Sequence[Decision]) -> int:
    acts = [d.action for d in decisions if d.action is not Action.HOLD]
    return sum(1 for a, b in zip(acts, acts[1:], strict=False) if a != b)
