"""systemd's notification protocol (sd_notify): readiness, status line and watchdog pings.

Sits beside the sinks, below the loop. The protocol is one datagram of ``KEY=value`` lines to
the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an abstract name written with a leading
'@'); without it (not under systemd, or ``Type=exec``) every call does nothing. Written here
rather than taken from a library: it is a dozen lines, and the small packages that do it either
need libsystemd's headers to build or do not handle abstract sockets.

``NotifySink`` is a sink like the others: after each tick it sends ``WATCHDOG=1`` (the loop is
alive, whether that tick could read libvirt or not) and a one-line ``STATUS=``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from autoballoon.report import Health, TickReport

log = logging.getLogger("autoballoon")


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` to systemd; False when there is no socket to send it to."""
    addr = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not addr or addr[0] not in "/@":
        return False
    target = "\0" + addr[1:] if addr[0] == "@" else addr
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(target)
            s.sendall(message.encode("utf-8"))
    except OSError as err:
        log.debug("sd_notify to %s failed: %s", addr, err)
        return False
    return True


def watchdog_s(env: Mapping[str, str] | None = None) -> float | None:
    """The unit's WatchdogSec for this process (None when there is none, or it is another
    process's: WATCHDOG_PID names the one meant)."""
    env = os.environ if env is None else env
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6


def status_line(report: TickReport, health: Health) -> str:
    """One line for `systemctl status`: guests managed and how the last tick went."""
    when = time.strftime("%H:%M:%S", time.localtime(report.t))
    if report.error is not None:
        return (
            f"last tick {when} FAILED ({health.failed_ticks} failed in all): "
            f"{report.error.splitlines()[0] if report.error else ''}"
        )
    mode = "dry-run, " if report.dry_run else ""
    skipped = f", {len(report.skipped)} not controlled" if report.skipped else ""
    return (
        f"{mode}{len(report.guests)} guest(s) managed{skipped}; last tick {when} ok "
        f"({health.ticks} ticks)"
    )


class NotifySink:
    """After every tick: ``WATCHDOG=1`` and ``STATUS=``; nothing when not under systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = env

    def on_tick(self, report: TickReport, health: Health) -> None:
        notify(f"WATCHDOG=1\nSTATUS={status_line(report, health)}", self.env)

    def close(self) -> None:
        notify("STOPPING=1", self.env)
