"""The hypervisor as the rest of autoballoon sees it: a small interface and an error taxonomy.

Sits at the edge between observe/act and the one package that imports libvirt
(``autoballoon.backends.libvirt``). Nothing here imports libvirt, so the daemon, the observer and
the actuator can be read (and tested) without it.

Errors come in four kinds, mapped once in the backend:

- ``TransientError``: the connection itself is lost (an RPC or remote error, a dead keepalive) or
  the daemon is restarting. Only this kind is retried, with backoff, at the backend edge; a tick
  that cannot read the host makes no decision: never one on stale data.
- ``DomainGone``: the guest stopped or was undefined between listing and acting. Dropped quietly.
- ``GuestError``: one guest's trouble (its QEMU monitor does not answer, an operation failed).
  That guest is not controlled this tick and is tried again next tick; the others are controlled.
- ``PermanentError`` (a ``GuestError``): a call that cannot work as asked (not supported, invalid
  argument, denied); retrying would not help, and it is reported as an error.

At start only, a connection that can never work as configured (no such driver, a malformed URI,
authentication or permission refused) is ``CannotConnect``: the daemon stops with one line
rather than retrying for ever.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from autoballoon.core.samples import NO_TAGS, DomainTags


class HypervisorError(Exception):
    """Base of the taxonomy."""


class TransientError(HypervisorError):
    """Connection-level trouble; worth retrying after a backoff."""


class CannotConnect(HypervisorError):
    """The URI can never be opened as given; retrying will not help (raised by ``connect``)."""


class DomainGone(HypervisorError):
    """The domain no longer exists or no longer runs."""


class GuestError(HypervisorError):
    """One guest's failure: that guest is left alone this tick, the others are not affected."""


class PermanentError(GuestError):
    """A call that cannot succeed as asked; not worth repeating unchanged."""


@dataclass(frozen=True, slots=True)
class RawGuest:
    """One running guest as read from the hypervisor, before sanitising.

    ``stats`` uses QEMU's guest-stats names and units (bytes), whichever route it came by;
    ``source`` says which: "qmp" (QEMU's guest-stats, including the 6.12 counters) or "libvirt"
    (the standard balloon statistics only).
    """

    name: str
    uuid: str
    actual_kib: int
    max_kib: int
    last_update: int
    stats: Mapping[str, object]
    source: str
    rss_kib: int | None = None
    """Resident memory of the guest's QEMU process on the host (libvirt's balloon.rss)."""
    stats_period_s: int | None = None
    """How often the guest reports statistics (the live XML's memballoon stats period)."""
    autodeflate: bool = False
    """The balloon device has deflate-on-OOM (the live XML's ``autodeflate='on'``)."""
    free_page_reporting: bool = False
    """The balloon device reports freed pages (the live XML's ``freePageReporting='on'``)."""
    tags: DomainTags = NO_TAGS
    """The live XML's ``<metadata>`` about the guest's policy (autoballoon's, Nova's flavor)."""


@dataclass
class Reading:
    """Everything one tick read from the hypervisor."""

    guests: list[RawGuest] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """Guests seen but not controlled this tick, with the reason (paused, no balloon, error)."""


class Hypervisor(Protocol):
    def read(self, wanted: Callable[[str], bool]) -> Reading:
        """Read every running guest whose name ``wanted`` accepts (no other guest is touched).

        Raises TransientError when the host is unreachable.
        """
        ...

    def set_balloon_kib(self, name: str, kib: int) -> None:
        """Set a guest's live balloon target. Raises DomainGone, GuestError or TransientError."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Connectable(Protocol):
    """A backend that can be asked to connect now, at start (optional: a test fake need not)."""

    def connect(self) -> None:
        """Open the connection; CannotConnect when it never can, TransientError when not now."""
        ...
