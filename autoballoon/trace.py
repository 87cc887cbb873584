"""Traces: what the host and its guests reported, tick by tick, as JSON Lines on disk.

Sits below the sinks and replay, above the report values: the daemon writes a trace
(``TraceWriter``) from the same samples it feeds the engine, with the decisions it took (each
guest's ``DecisionRecord``, an optional field); ``autoballoon replay`` reads one back
(``read_trace``) and feeds the recorded samples through the unchanged engine. The format is a
public contract, documented in ``docs/trace-format.md``; change it only with a new version
number.

Reading is streaming: one line in memory at a time, whatever the file's size. A trace is input
from disk, so every structural problem is a ``TraceError`` naming the file and the line. Guest
statistics inside a well-formed line are a different matter: the guest controls them, so they
pass through ``sanitize_guest_stats`` exactly as in the live daemon, and garbage values are
dropped (and counted), never fatal.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from autoballoon.core.policy import GuestPolicy, HostPolicy, Match, PolicyLayer, PolicySet
from autoballoon.core.samples import (
    NO_TAGS,
    DomainTags,
    GuestSample,
    HostSample,
    sanitize_guest_stats,
)
from autoballoon.report import DecisionRecord, GuestRecord

FORMAT = "autoballoon-trace"
VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 traces lack what replay needs to equal the live run (the core's clock, each
guest's report age, stats period and QEMU RSS, the policies): they read as before."""

MAX_LINE_BYTES = 16 * 1024 * 1024
"""A longer line is an error, not an allocation: a tick of a thousand guests is about 1 MiB."""

MAX_PROBLEMS_KEPT = 20
"""Dropped-statistic messages kept for the report; the rest are only counted."""


class TraceError(ValueError):
    """A trace that cannot be read (or appended to); the message names the file and line."""

    def __init__(self, path: Path | str, line_no: int | None, message: str) -> None:
        self.path = str(path)
        self.line_no = line_no
        self.detail = message
        where = f"{path}: line {line_no}" if line_no is not None else f"{path}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class RecordedRun:
    """What a recording daemon said about its run: the policies it decided with, and whether
    it acted (the balloon followed its decisions) or only dry-ran. None: not recorded."""

    policies: PolicySet | None = None
    dry_run: bool | None = None


@dataclass(frozen=True)
class RecordedTick:
    """One tick as a trace keeps it: the engine's inputs, all taken at ``t``.

    The part of an ``observe.Observation`` that replay needs (the host's sample and every
    guest's), plus the decisions the recording daemon took, when the trace has them. It is not
    the observation itself: which guests were skipped, and how their statistics were read,
    are not recorded.
    """

    t: float
    host: HostSample
    samples: dict[str, GuestSample]
    decisions: dict[str, DecisionRecord] = field(default_factory=dict)
    """What the recording daemon decided per guest (optional in the format; empty if absent)."""
    now: float | None = None
    """The core's clock at this tick (the daemon's monotonic clock), which the samples and
    the host sample are stamped with; None in traces that do not record it (then ``t``)."""
    run: RecordedRun | None = None
    """Set on the first tick of a daemon run appended to an existing trace: the engine started
    from nothing here, with these policies."""
    policies: PolicySet | None = None
    """Set when a reload changed the policies: in force from this tick on."""

    @property
    def clock(self) -> float:
        """The time ``decide.step`` is given for this tick: ``now`` when recorded, else ``t``."""
        return self.t if self.now is None else self.now


class _Bad(Exception):
    """A problem in one line; ``TraceReader`` adds the file name and line number."""


# --- validation helpers: small and explicit, because every line of a huge file goes through them


def _get(obj: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise _Bad(f"{where}missing required key {key!r}") from None


def _kib(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = _get(obj, key, where)
    if type(value) is not int or value < 0:
        raise _Bad(f"{where}{key!r} must be a non-negative integer, not {_show(value)}")
    return value


def _number(value: Any, key: str, where: str, nullable: bool = False) -> float | None:
    if value is None and nullable:
        return None
    if (type(value) is int or type(value) is float) and math.isfinite(value):
        return float(value)
    kind = "a number or null" if nullable else "a number"
    raise _Bad(f"{where}{key!r} must be {kind}, not {_show(value)}")


def _optional_number(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    """An optional finite number (None when absent: traces written before it existed)."""
    return _number(obj[key], key, where) if key in obj else None


def _optional_kib(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    return _kib(obj, key, where) if key in obj else None


def _flag(obj: Mapping[str, Any], key: str, where: str) -> bool:
    """An optional boolean (false when absent: traces written before it existed)."""
    value = obj.get(key, False)
    if type(value) is not bool:
        raise _Bad(f"{where}{key!r} must be true or false, not {_show(value)}")
    return value


def _tags(obj: Mapping[str, Any], where: str) -> DomainTags:
    """The optional ``tags`` object (the domain's policy metadata); none when absent."""
    value = obj.get("tags")
    if value is None:
        return NO_TAGS
    if not isinstance(value, dict):
        raise _Bad(f"{where}'tags' must be an object, not {_show(value)}")
    policy, flavor = value.get("policy", ""), value.get("flavor", "")
    overrides = value.get("overrides", {})
    if not (isinstance(policy, str) and isinstance(flavor, str) and isinstance(overrides, dict)):
        raise _Bad(f"{where}'tags' needs string 'policy' and 'flavor', object 'overrides'")
    if not all(isinstance(v, str) for v in overrides.values()):
        raise _Bad(f"{where}'tags.overrides' values must be strings")
    return DomainTags(policy, flavor, tuple(sorted(overrides.items())))


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"string {json.dumps(text)}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value!r}"


def _no_constants(name: str) -> float:
    raise _Bad(f"{name} is not a JSON number")


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except json.JSONDecodeError as err:
        raise _Bad(f"not valid JSON: {err.msg} (column {err.colno})") from None
    except UnicodeDecodeError:
        raise _Bad("not UTF-8 text") from None
    except RecursionError:
        raise _Bad("JSON nested too deeply") from None


def parse_header(obj: Any) -> dict[str, Any]:
    """Check a decoded header line; returns it (extra keys included) or raises ``_Bad``."""
    if not isinstance(obj, dict):
        raise _Bad(f"the first line must be the trace header (an object), not {_show(obj)}")
    fmt = obj.get("format")
    if fmt != FORMAT:
        raise _Bad(
            f'not an autoballoon trace: the header\'s "format" is {_show(fmt)}, expected "{FORMAT}"'
        )
    version = _get(obj, "version", "header: ")
    if type(version) is not int:
        raise _Bad(f"header: 'version' must be an integer, not {_show(version)}")
    if version not in READABLE_VERSIONS:
        raise _Bad(
            f"trace format version {version} is not supported (this autoballoon reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}); replay it with the "
            "autoballoon that recorded it"
        )
    host = _get(obj, "host", "header: ")
    if not isinstance(host, str):
        raise _Bad(f"header: 'host' must be a string, not {_show(host)}")
    interval = _number(_get(obj, "interval_s", "header: "), "interval_s", "header: ")
    if interval is None or not interval > 0:
        raise _Bad(f"header: 'interval_s' must be positive, not {interval}")
    _number(_get(obj, "started", "header: "), "started", "header: ")
    parse_run(obj, "header: ")
    return obj


def parse_run(obj: Mapping[str, Any], where: str) -> RecordedRun:
    """The optional ``policies`` and ``dry_run`` of a header or of a tick's ``run``."""
    dry_run = obj.get("dry_run")
    if dry_run is not None and type(dry_run) is not bool:
        raise _Bad(f"{where}'dry_run' must be true or false, not {_show(dry_run)}")
    policies = _policies(obj["policies"], where) if "policies" in obj else None
    return RecordedRun(policies, dry_run)


def recorded_run(header: Mapping[str, Any]) -> RecordedRun:
    """What a checked header (``TraceReader.header``) recorded about the first run."""
    return parse_run(header, "header: ")


# --- the policy set, as a trace keeps it -----------------------------------------------------


def policies_record(policies: PolicySet) -> dict[str, Any]:
    """The policy set as JSON: every field resolved, so a replay does not depend on the
    policy files, nor on the defaults of the autoballoon that reads it."""
    return {
        "default_source": policies.default_source,
        "default": _json_fields(policies.default.model_dump(mode="json")),
        "host": _json_fields(policies.host.model_dump(mode="json")),
        "layers": [
            {
                "source": layer.source,
                "match": layer.match.model_dump(mode="json"),
                "policy": _json_fields(layer.overrides),
            }
            for layer in policies.layers
        ],
    }


def _json_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Policy fields JSON can carry: TOML's ``inf`` (``stable_s = inf``: never) becomes the
    string "inf", which the policy models read back as the number."""
    return {
        k: str(v) if isinstance(v, float) and not math.isfinite(v) else v for k, v in fields.items()
    }


def _policies(value: Any, where: str) -> PolicySet:
    """The inverse of ``policies_record``; a set this autoballoon cannot read is an error."""
    where = f"{where}policies: "
    if not isinstance(value, dict):
        raise _Bad(f"{where}must be an object, not {_show(value)}")
    layers_raw = _get(value, "layers", where)
    if not isinstance(layers_raw, list):
        raise _Bad(f"{where}'layers' must be an array, not {_show(layers_raw)}")
    source = value.get("default_source", "(recorded)")
    try:
        default = GuestPolicy.model_validate(_get(value, "default", where))
        host = HostPolicy.model_validate(_get(value, "host", where))
        layers = []
        for i, raw in enumerate(layers_raw):
            if not isinstance(raw, dict) or not isinstance(raw.get("policy"), dict):
                raise _Bad(f"{where}layer {i} must be an object with a 'policy' object")
            overrides = dict(raw["policy"])
            GuestPolicy.model_validate(default.model_dump() | overrides)
            layers.append(
                PolicyLayer(str(raw.get("source", f"layer {i}")),
                            Match.model_validate(_get(raw, "match", where)), overrides)
            )  # fmt: skip
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(x) for x in e["loc"])
        raise _Bad(
            f"{where}{loc!r}: {e['msg']} (recorded by another autoballoon version?); "
            "replay it with --policies DIR"
        ) from None
    return PolicySet(default, host, tuple(layers), str(source))


def parse_tick(obj: Any) -> tuple[RecordedTick, list[str]]:
    """Check a decoded tick line and build its samples; also returns dropped-stat problems."""
    if not isinstance(obj, dict):
        raise _Bad(f"a tick must be an object, not {_show(obj)}")
    t = _number(_get(obj, "t", ""), "t", "")
    assert t is not None
    now = _optional_number(obj, "now", "")
    clock = t if now is None else now
    h = _get(obj, "host", "")
    if not isinstance(h, dict):
        raise _Bad(f"'host' must be an object, not {_show(h)}")
    host = HostSample(
        clock,
        _kib(h, "mem_total_kib", "host: "),
        _kib(h, "mem_available_kib", "host: "),
        _number(_get(h, "psi_some_avg10", "host: "), "psi_some_avg10", "host: ", True),
        _number(_get(h, "psi_full_avg10", "host: "), "psi_full_avg10", "host: ", True),
    )
    guests = _get(obj, "guests", "")
    if not isinstance(guests, dict):
        raise _Bad(f"'guests' must be an object keyed by domain name, not {_show(guests)}")
    samples: dict[str, GuestSample] = {}
    decisions: dict[str, DecisionRecord] = {}
    problems: list[str] = []
    for name, g in guests.items():
        where = f"guest {name!r}: "
        if not isinstance(g, dict):
            raise _Bad(f"{where}must be an object, not {_show(g)}")
        uuid = _get(g, "uuid", where)
        if not isinstance(uuid, str):
            raise _Bad(f"{where}'uuid' must be a string, not {_show(uuid)}")
        raw_stats = _get(g, "stats", where)
        if not isinstance(raw_stats, dict):
            raise _Bad(f"{where}'stats' must be an object, not {_show(raw_stats)}")
        stats, dropped = sanitize_guest_stats(raw_stats)
        if dropped:
            problems.extend(f"{where}{p}" for p in dropped)
        samples[name] = GuestSample(
            name=name,
            uuid=uuid,
            t=clock,
            actual_kib=_kib(g, "actual_kib", where),
            max_kib=_kib(g, "max_kib", where),
            last_update=_kib(g, "last_update", where),
            stats=stats,
            stats_period_s=_optional_number(g, "stats_period_s", where),
            rss_kib=_optional_kib(g, "rss_kib", where),
            stats_age_s=_optional_number(g, "stats_age_s", where),
            autodeflate=_flag(g, "autodeflate", where),
            free_page_reporting=_flag(g, "free_page_reporting", where),
            tags=_tags(g, where),
        )
        if "decision" in g:
            decisions[name] = _decision(g["decision"], where)
    run = None
    if "run" in obj:
        if not isinstance(obj["run"], dict):
            raise _Bad(f"'run' must be an object, not {_show(obj['run'])}")
        run = parse_run(obj["run"], "run: ")
    policies = _policies(obj["policies"], "") if "policies" in obj else None
    return RecordedTick(t, host, samples, decisions, now, run, policies), problems


def _decision(value: Any, where: str) -> DecisionRecord:
    """A guest's optional recorded decision; written by the daemon, so a bad one is an error."""
    if not isinstance(value, dict):
        raise _Bad(f"{where}'decision' must be an object, not {_show(value)}")
    try:
        return DecisionRecord.model_validate(value)
    except ValidationError as err:
        e = err.errors()[0]
        field = ".".join(str(x) for x in e["loc"])
        raise _Bad(f"{where}decision: {field!r}: {e['msg']}") from None


class TraceReader:
    """A trace opened for reading: ``header`` at once, then the ticks, one line at a time.

    Besides being an iterator of ``RecordedTick``, it tells how far it got (``position`` of ``size``
    bytes, for a progress indicator) and what guest statistics it dropped (``problem_count``,
    the first few in ``problems``). A final line cut short by a crash (no newline at the end,
    not valid JSON) is skipped and reported in ``problems``; anywhere else it is an error.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.line_no = 0
        self.problems: list[str] = []
        self.problem_count = 0
        self.last_t: float | None = None
        self._last_line_open = False
        try:
            self._raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 (closed by close())
            self.size = os.fstat(self._raw.fileno()).st_size
            self._fh: IO[bytes] | gzip.GzipFile = self._raw
            if path.suffix == ".gz":
                self._fh = gzip.GzipFile(fileobj=self._raw, mode="rb")
        except OSError as err:
            raise TraceError(path, None, f"cannot read: {err.strerror or err}") from None
        try:
            line = self._next_line()
            if line is None:
                raise TraceError(path, 1, "empty file: expected the trace header")
            try:
                self.header = parse_header(_loads(line))
            except _Bad as err:
                raise TraceError(path, self.line_no, str(err)) from None
        except BaseException:
            self.close()
            raise

    @property
    def position(self) -> int:
        """Bytes of the file consumed so far (of the compressed file for ``.gz``)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return self.size

    def _next_line(self) -> bytes | None:
        """The next non-blank line, or None at the end of the file."""
        while True:
            try:
                raw = self._fh.readline(MAX_LINE_BYTES + 1)
            except (OSError, EOFError, gzip.BadGzipFile) as err:
                raise TraceError(self.path, self.line_no + 1, f"cannot read: {err}") from None
            if not raw:
                return None
            self.line_no += 1
            if not raw.endswith(b"\n"):
                if len(raw) > MAX_LINE_BYTES:
                    raise TraceError(
                        self.path, self.line_no, f"line longer than {MAX_LINE_BYTES} bytes"
                    )
                self._last_line_open = True
            if raw.strip():
                return raw

    def __iter__(self) -> TraceReader:
        return self

    def __next__(self) -> RecordedTick:
        line = self._next_line()
        if line is None:
            self.close()
            raise StopIteration
        try:
            tick, dropped = parse_tick(_loads(line))
        except _Bad as err:
            if self._last_line_open and str(err).startswith("not valid JSON"):
                self._note(f"line {self.line_no}: incomplete last line ignored")
                self.close()
                raise StopIteration from None
            self.close()
            raise TraceError(self.path, self.line_no, str(err)) from None
        if self.last_t is not None and tick.t < self.last_t:
            self.close()
            raise TraceError(
                self.path,
                self.line_no,
                f"'t' goes backwards ({tick.t} after {self.last_t}); ticks must be in time order",
            )
        self.last_t = tick.t
        for p in dropped:
            self._note(f"line {self.line_no}: {p}")
        return tick

    def _note(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(problem)

    def close(self) -> None:
        self._fh.close()
        self._raw.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_trace(path: Path) -> tuple[dict[str, Any], Iterator[RecordedTick]]:
    """The header (checked) and the ticks, read lazily; raises ``TraceError`` on bad input."""
    reader = TraceReader(path)
    return reader.header, reader


# --- writing ------------------------------------------------------------------------------


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _guest_record(s: GuestSample) -> dict[str, Any]:
    g: dict[str, Any] = {
        "uuid": s.uuid,
        "max_kib": s.max_kib,
        "actual_kib": s.actual_kib,
        "last_update": s.last_update,
        "stats": dict(sorted(s.stats.items())),
    }
    # Written only when known (or on): absent reads as the old behaviour.
    optional = {
        "stats_period_s": s.stats_period_s,
        "stats_age_s": _finite(s.stats_age_s),
        "rss_kib": s.rss_kib,
        "autodeflate": s.autodeflate or None,
        "free_page_reporting": s.free_page_reporting or None,
    }
    g.update((k, v) for k, v in optional.items() if v is not None)
    if s.tags:
        g["tags"] = {
            "policy": s.tags.policy,
            "flavor": s.tags.flavor,
            "overrides": dict(s.tags.overrides),
        }
    return g


def tick_record(
    t: float,
    host: HostSample,
    samples: Mapping[str, GuestSample],
    decisions: Mapping[str, DecisionRecord] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The JSON object of one tick line (the inverse of ``parse_tick``, but for ``run`` and
    ``policies``, which ``TraceWriter.write_tick`` adds).

    ``now`` is the core's clock the samples are stamped with, when it is not the wall clock
    ``t`` (the daemon's is monotonic).
    """
    guests = {name: _guest_record(s) for name, s in samples.items()}
    for name, d in (decisions or {}).items():
        if name in guests:
            guests[name]["decision"] = d.to_json()
    return _tick_object(t, host, guests, now)


def rows_record(
    t: float, host: HostSample, rows: Iterable[GuestRecord], now: float | None = None
) -> dict[str, Any]:
    """``tick_record`` of a tick's rows (``report.assemble_rows``): each row's sample, with its
    decision."""
    guests = {}
    for row in rows:
        guests[row.name] = _guest_record(row.sample) | {"decision": row.decision.to_json()}
    return _tick_object(t, host, guests, now)


def _tick_object(
    t: float, host: HostSample, guests: dict[str, Any], now: float | None
) -> dict[str, Any]:
    clock = {} if now is None or now == t else {"now": now}
    return {
        "t": t,
        **clock,
        "host": {
            "mem_total_kib": host.mem_total_kib,
            "mem_available_kib": host.mem_available_kib,
            "psi_some_avg10": _finite(host.psi_some_avg10),
            "psi_full_avg10": _finite(host.psi_full_avg10),
        },
        "guests": guests,
    }


def _run_record(run: RecordedRun) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if run.policies is not None:
        out["policies"] = policies_record(run.policies)
    if run.dry_run is not None:
        out["dry_run"] = run.dry_run
    return out


def _dumps(obj: Mapping[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n").encode()


class TraceWriter:
    """Appends ticks to a trace file, one flushed line per tick.

    A new or empty file gets the header first, with ``run`` (the recording daemon's policies
    and dry-run flag) when given. An existing file must already be a trace of this version
    (anything else is refused untouched, so a mistyped path never clobbers a file); a last line
    cut short by a crash is cut off before appending, so the file stays readable, and the
    first tick appended carries ``run``: a new daemon run starts there.
    """

    def __init__(
        self,
        path: Path,
        interval_s: float,
        hostname: str,
        extra: dict[str, Any] | None = None,
        run: RecordedRun | None = None,
    ) -> None:
        self.path = path
        self._pending_run: dict[str, Any] | None = None
        run_json = _run_record(run or RecordedRun())
        try:
            self._fh: io.BufferedWriter | None = open(path, "ab")  # noqa: SIM115
        except OSError as err:
            raise TraceError(
                path, None, f"cannot open for writing: {err.strerror or err}"
            ) from None
        try:
            if self._fh.seek(0, os.SEEK_END) == 0:
                header = {**(extra or {}), **run_json} | {
                    "format": FORMAT,
                    "version": VERSION,
                    "host": hostname,
                    "interval_s": float(interval_s),
                    "started": time.time(),
                }
                self._write(_dumps(header))
            else:
                self._check_existing()
                self._pending_run = run_json
        except BaseException:
            self.close()
            raise

    def _check_existing(self) -> None:
        with open(self.path, "rb") as fh:
            first = fh.readline(MAX_LINE_BYTES + 1)
            try:
                if not first.endswith(b"\n"):
                    raise _Bad("the first line is not a complete trace header")
                version = parse_header(_loads(first))["version"]
                if version != VERSION:
                    raise _Bad(
                        f"it is a version {version} trace and this autoballoon writes version "
                        f"{VERSION}; record to a new file"
                    )
            except _Bad as err:
                raise TraceError(self.path, 1, f"refusing to append: {err}") from None
            # Find the end of the last complete line: a crash may have left half a line.
            end = fh.seek(0, os.SEEK_END)
            pos, keep = end, None
            while pos > 0 and keep is None:
                step = min(pos, 65536)
                pos -= step
                fh.seek(pos)
                chunk = fh.read(step)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    keep = pos + nl + 1
        if keep is not None and keep < end:
            assert self._fh is not None
            os.ftruncate(self._fh.fileno(), keep)
            self._fh.seek(0, os.SEEK_END)

    def _write(self, data: bytes) -> None:
        if self._fh is None:
            raise ValueError(f"{self.path}: trace writer is closed")
        self._fh.write(data)
        self._fh.flush()

    def write_tick(
        self,
        t: float,
        host: HostSample,
        samples: Mapping[str, GuestSample],
        decisions: Mapping[str, DecisionRecord] | None = None,
        policies: PolicySet | None = None,
        now: float | None = None,
    ) -> None:
        """Append one tick (with the decisions taken, if given, ``policies`` when they changed
        at this tick, and the core's clock ``now`` when it is not ``t``); the line is complete
        on disk (flushed) when this returns."""
        self._append(tick_record(t, host, samples, decisions, now), policies)

    def write_rows(
        self,
        t: float,
        host: HostSample,
        rows: Iterable[GuestRecord],
        policies: PolicySet | None = None,
        now: float | None = None,
    ) -> None:
        """``write_tick`` of a tick's rows (``report.assemble_rows``): what the daemon records."""
        self._append(rows_record(t, host, rows, now), policies)

    def _append(self, obj: dict[str, Any], policies: PolicySet | None) -> None:
        if self._pending_run is not None:
            obj["run"], self._pending_run = self._pending_run, None
        if policies is not None:
            obj["policies"] = policies_record(policies)
        self._write(_dumps(obj))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
