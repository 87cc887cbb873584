"""Exit codes of `autoballoon run`, in one place: the command, the daemon, the systemd unit
(``RestartPreventExitStatus``) and the docs name them from here.

A code that retrying cannot fix (the operator must change something) is one the unit does not
restart on; libvirt not answering at start is worth a restart, within the unit's start limit.
"""

from __future__ import annotations

from typing import Final

OK: Final = 0
"""Stopped cleanly (SIGTERM/SIGINT, or --duration reached)."""
FAILED: Final = 1
"""`run --once` whose last tick could not read the host."""
USAGE: Final = 2
"""A bad command line (argparse)."""
CONFIG: Final = 3
"""The config file, a policy file or --record is invalid at start. Not restarted."""
LIBVIRT_REFUSED: Final = 4
"""The libvirt URI cannot be opened: no such driver, a malformed URI, authentication or
permission refused. Not restarted."""
LOCKED: Final = 5
"""Another autoballoon holds this URI's lock on this host. Not restarted."""
LIBVIRT_UNREACHABLE: Final = 75
"""libvirt did not answer at start (its socket is missing or refuses): restarted, within the
unit's start limit (EX_TEMPFAIL). Once running, losing libvirt is survived, not an exit."""

NOT_RESTARTED: Final = (CONFIG, LIBVIRT_REFUSED, LOCKED)

MEANING: Final = {
    OK: "stopped cleanly (SIGTERM/SIGINT, or --duration reached)",
    FAILED: "--once, and its last tick could not read the host",
    USAGE: "bad command line",
    CONFIG: "invalid config, policy or --record file at start",
    LIBVIRT_REFUSED: "the libvirt URI cannot be opened (no such driver, malformed, "
    "authentication refused)",
    LOCKED: "another autoballoon holds this URI's lock (see --lock-file)",
    LIBVIRT_UNREACHABLE: "libvirt did not answer at start (worth retrying; once running, a "
    "lost libvirt is survived)",
}
"""One line per code, for `run --help`."""
