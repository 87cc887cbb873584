"""Logging set-up: human lines by default, JSON lines for machines, journald-friendly.

Under systemd (stderr is the journal: JOURNAL_STREAM names its device:inode) human lines carry
no timestamp, since the journal adds its own. Every line written for the journal, JSON lines
included, starts with its syslog priority (``<4>`` for a warning; ``log_priority``), which
journald reads as the entry's priority, so that `journalctl -p warning` finds warnings. A
multi-line message (a traceback, a list of policy errors) is several journal entries, so each
of its lines carries the prefix too. Structured fields passed as ``extra={"fields": {...}}``
appear as extra keys in JSON output (never replacing ts, level or msg); human lines already
say the same in words.

``Repeating`` keeps a condition that comes back at every tick (libvirt down, one guest's
monitor failing) to three kinds of line: when it starts, at most one a minute while it lasts
(with how many times it happened), and when it ends.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update({k: v for k, v in fields.items() if k not in doc})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, sort_keys=True, default=str)


_SYSLOG_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


class PriorityFormatter(logging.Formatter):
    """Another formatter's lines, each prefixed `<priority>` (sd-daemon(3)'s convention)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG_PRIORITY.get(record.levelname, 6)
        return "\n".join(f"<{prio}>{line}" for line in self.inner.format(record).split("\n"))


def stderr_is_journal() -> bool:
    """True when stderr is the stream systemd connected to the journal (not just inherited)."""
    want = os.environ.get("JOURNAL_STREAM", "")
    if not want:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def make_formatter(fmt: str = "human", priority: str = "auto") -> logging.Formatter:
    """The formatter for ``log_format`` and ``log_priority`` (auto, always or never)."""
    journal = stderr_is_journal()
    inner: logging.Formatter
    if fmt == "json":
        inner = JsonFormatter()
    elif journal:
        inner = logging.Formatter("%(levelname)s %(message)s")
    else:
        inner = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
    if priority == "always" or (priority == "auto" and journal):
        return PriorityFormatter(inner)
    return inner


def setup_logging(fmt: str = "human", level: str = "info", priority: str = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt, priority))
    root = logging.getLogger()
    for old in list(root.handlers):  # ours from a previous call, or a plain stderr one
        if getattr(old, "_autoballoon", False) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    handler._autoballoon = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # APScheduler logs every job run at INFO, and a dropped tick at WARNING: the first is noise
    # at one tick per few seconds, the second the daemon says itself (with a count).
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


REPEAT_EVERY_S = 60.0
"""While a condition lasts, how often it is logged again (with a count)."""


@dataclass
class _Ongoing:
    first: float
    last_logged: float
    count: int
    unlogged: int
    message: str


class Repeating:
    """Log a recurring condition when it starts, at most every ``every_s`` while it lasts, and
    when it ends. Keys name conditions ("libvirt", "guest web-1 monitor"); thread-safe enough
    for one tick thread (the only caller of a given key)."""

    def __init__(
        self,
        logger: logging.Logger,
        every_s: float = REPEAT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.every_s, self.clock = logger, every_s, clock
        self._ongoing: dict[str, _Ongoing] = {}

    def happened(self, key: str, level: int, message: str) -> None:
        now = self.clock()
        o = self._ongoing.get(key)
        if o is None:
            self._ongoing[key] = _Ongoing(now, now, 1, 0, message)
            self.log.log(level, message)
            return
        o.count += 1
        o.unlogged += 1
        o.message = message
        if now - o.last_logged >= self.every_s:
            self.log.log(
                level,
                "%s (still; %d times in %.0f s, %d since the last line)",
                message,
                o.count,
                now - o.first,
                o.unlogged,
            )
            o.last_logged, o.unlogged = now, 0

    def ended(self, key: str, message: str, level: int = logging.INFO) -> bool:
        """Log the end of ``key`` if it was ongoing; True when it was."""
        o = self._ongoing.pop(key, None)
        if o is None:
            return False
        self.log.log(
            level, "%s (after %d time(s) over %.0f s)", message, o.count, self.clock() - o.first
        )
        return True

    def ongoing(self, key: str) -> bool:
        return key in self._ongoing
