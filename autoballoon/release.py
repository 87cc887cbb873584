"""Giving guests their memory back: `autoballoon release` and ``on_stop = "deflate"``.

Sits beside act, below the loop and the commands. ``plan_release`` is a pure function of what
the hypervisor read, the policies and the scope: for each guest, the size to give back (its
policy's maximum: ``max_mib`` when set, else the domain's) or why it is left alone (outside
the config's include/exclude, opted out, observe mode, a policy that does not resolve). The
policies decide here exactly as they do at every tick: a guest the daemon may not resize is not
resized on the way out either. ``apply_release`` then sets each size, one guest's failure never
stopping the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from autoballoon.core.policy import PolicySet
from autoballoon.core.units import KIB_PER_MIB
from autoballoon.hypervisor import Hypervisor, HypervisorError, RawGuest

log = logging.getLogger("autoballoon")


@dataclass(frozen=True)
class ReleaseStep:
    """One guest: from its current size to ``to_kib``, or left alone (``to_kib`` None)."""

    name: str
    from_kib: int
    to_kib: int | None
    why: str

    def line(self, dry_run: bool = False) -> str:
        if self.to_kib is None:
            return (
                f"guest {self.name} left as it is, {self.from_kib // KIB_PER_MIB} MiB ({self.why})"
            )
        verb = "would go back" if dry_run else "back"
        return (
            f"guest {self.name} {verb} to {self.to_kib // KIB_PER_MIB} MiB from "
            f"{self.from_kib // KIB_PER_MIB} MiB ({self.why})"
        )


def why_not_resized(
    g: RawGuest, policies: PolicySet, in_scope: Callable[[str], bool]
) -> str | None:
    """Why the daemon never resizes this guest (outside the config's scope, opted out, observe
    mode, a policy that does not resolve), or None when it may."""
    if not in_scope(g.name):
        return "excluded by the config"
    try:
        p = policies.resolve_cached(g.name, g.uuid, g.tags)
    except ValueError as err:
        return f"policy error: {err}"
    if not p.enabled:
        return "opted out (enabled = false)"
    if p.mode == "observe":
        return "observe mode"
    return None


def plan_release(
    guests: Iterable[RawGuest],
    policies: PolicySet,
    in_scope: Callable[[str], bool] = lambda _name: True,
) -> list[ReleaseStep]:
    """What releasing ``guests`` would do, guest by guest, in name order."""
    steps = []
    for g in sorted(guests, key=lambda g: g.name):
        why = why_not_resized(g, policies, in_scope)
        if why is not None:
            steps.append(ReleaseStep(g.name, g.actual_kib, None, why))
            continue
        target = policies.resolve_cached(g.name, g.uuid, g.tags).max_kib(g.max_kib)
        if g.actual_kib >= target:
            steps.append(ReleaseStep(g.name, g.actual_kib, None, "already at its maximum"))
            continue
        what = "its policy's max_mib" if target < g.max_kib else "the domain's maximum"
        steps.append(ReleaseStep(g.name, g.actual_kib, target, what))
    return steps


def apply_release(hypervisor: Hypervisor, steps: Sequence[ReleaseStep]) -> dict[str, str]:
    """Set each planned size; per guest resized, "applied" or the error."""
    results: dict[str, str] = {}
    for s in steps:
        if s.to_kib is None:
            continue
        try:
            hypervisor.set_balloon_kib(s.name, s.to_kib)
        except HypervisorError as err:
            results[s.name] = str(err) or type(err).__name__
        else:
            results[s.name] = "applied"
    return results
