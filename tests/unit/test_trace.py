"""Traces: the JSON Lines format of docs/trace-format.md, written and read back."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from autoballoon import trace
from autoballoon.core.decide import Action
from autoballoon.core.policy import GuestPolicy, HostPolicy, Match, PolicyLayer, PolicySet
from autoballoon.core.samples import HostSample
from autoballoon.report import DecisionRecord
from autoballoon.trace import TraceError, TraceWriter, read_trace
from tests.factories import sample

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HOST = HostSample(100.0, 24 << 20, 20 << 20, 0.12, None)
HEADER = {"format": "autoballoon-trace", "version": 1, "host": "h", "interval_s": 2.0,
          "started": 100.0}  # fmt: skip


def tick_obj(t: Any = 100.0, **guest_overrides: Any) -> dict[str, Any]:
    guest = {
        "uuid": "u-1", "max_kib": 1048576, "actual_kib": 1048576, "last_update": 100,
        "stats": {"stat-available-memory": 600 << 20, "stat-oom-kills": 0},
    } | guest_overrides  # fmt: skip
    return {
        "t": t,
        "host": {
            "mem_total_kib": 1 << 24,
            "mem_available_kib": 1 << 23,
            "psi_some_avg10": 0.0,
            "psi_full_avg10": None,
        },  # fmt: skip
        "guests": {"vm": guest},
    }


def write_lines(path: Path, *lines: object) -> Path:
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_text(text)
    return path


def error_of(path: Path) -> TraceError:
    with pytest.raises(TraceError) as info:
        _, ticks = read_trace(path)
        list(ticks)
    return info.value


# --- writing and reading back -------------------------------------------------------------


def test_what_the_writer_writes_reads_back_as_the_same_samples(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    samples = {"a": sample(100.0, name="a", oom=1, stalls=137), "b": sample(100.0, name="b")}
    with TraceWriter(path, 2.0, "kvm-7", extra={"recorder": "test"}) as w:
        w.write_tick(100.0, HOST, samples)
        w.write_tick(102.0, HOST, {"a": sample(102.0, name="a")})
    header, ticks = read_trace(path)
    assert header["host"] == "kvm-7" and header["interval_s"] == 2.0
    assert header["recorder"] == "test" and header["version"] == trace.VERSION
    got = list(ticks)
    assert [t.t for t in got] == [100.0, 102.0]
    assert got[0].host == HOST
    assert got[0].samples == samples
    assert list(got[1].samples) == ["a"]


def test_the_decisions_taken_live_are_recorded_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    samples = {"a": sample(100.0, name="a"), "b": sample(100.0, name="b")}
    rescue = DecisionRecord(
        action=Action.DEFLATE,
        target_kib=1 << 20,
        reason="oom: 1 kill",
        rule="rescue",
        clamped_by="max",
        result="applied",
    )
    with TraceWriter(path, 2.0, "kvm-7") as w:
        w.write_tick(100.0, HOST, samples, {"a": rescue})
    line = json.loads(path.read_text().splitlines()[1])
    assert line["guests"]["a"]["decision"]["rule"] == "rescue"
    assert "decision" not in line["guests"]["b"]
    (tick,) = read_trace(path)[1]
    assert tick.decisions == {"a": rescue}
    assert tick.samples == samples


def test_a_trace_without_decisions_still_reads(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", HEADER, tick_obj())
    (tick,) = read_trace(path)[1]
    assert tick.decisions == {} and list(tick.samples) == ["vm"]


@pytest.mark.parametrize(
    ("decision", "words"),
    [
        ("inflate", "'decision' must be an object, not string"),
        ({"action": "explode", "target_kib": 1, "reason": ""}, "decision: 'action'"),
        ({"action": "hold", "reason": ""}, "decision: 'target_kib': Field required"),
    ],
)
def test_a_malformed_decision_is_an_error_naming_the_line(
    tmp_path: Path, decision: object, words: str
) -> None:
    path = write_lines(tmp_path / "t.jsonl", HEADER, tick_obj(decision=decision))
    err = error_of(path)
    assert err.line_no == 2 and words in str(err), str(err)


def test_each_tick_is_one_complete_line_on_disk_when_write_returns(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    w = TraceWriter(path, 1.0, "h")
    w.write_tick(100.0, HOST, {"vm": sample(100.0)})
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 2 and all(line.endswith("\n") for line in lines)
    assert json.loads(lines[1])["guests"]["vm"]["actual_kib"] == 1024 * 1024
    w.close()


def test_reopening_appends_without_a_second_header(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, 1.0, "h") as w:
        w.write_tick(100.0, HOST, {"vm": sample(100.0)})
    with TraceWriter(path, 1.0, "h") as w:
        w.write_tick(101.0, HOST, {"vm": sample(101.0)})
    assert sum('"format"' in line for line in path.read_text().splitlines()) == 1
    assert [t.t for t in read_trace(path)[1]] == [100.0, 101.0]


def test_an_empty_file_gets_a_header(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.touch()
    TraceWriter(path, 1.0, "h").close()
    assert read_trace(path)[0]["format"] == "autoballoon-trace"


def test_the_writer_refuses_to_append_to_something_that_is_not_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my precious notes\n")
    with pytest.raises(TraceError, match="line 1.*refusing to append"):
        TraceWriter(path, 1.0, "h")
    assert path.read_text() == "my precious notes\n"


def test_a_line_cut_by_a_crash_is_removed_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, 1.0, "h") as w:
        w.write_tick(100.0, HOST, {"vm": sample(100.0)})
    with path.open("a") as fh:
        fh.write('{"t": 101.0, "host": {"mem_tot')
    with TraceWriter(path, 1.0, "h") as w:
        w.write_tick(102.0, HOST, {"vm": sample(102.0)})
    assert [t.t for t in read_trace(path)[1]] == [100.0, 102.0]


def test_non_finite_psi_is_written_as_null(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, 1.0, "h") as w:
        w.write_tick(100.0, HostSample(100.0, 1, 1, float("nan"), None), {})
    tick = next(read_trace(path)[1])
    assert tick.host.psi_some_avg10 is None


def test_gzip_traces_are_read(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(HEADER) + "\n" + json.dumps(tick_obj()) + "\n")
    assert [t.t for t in read_trace(path)[1]] == [100.0]


# --- the reader is lazy and bounded -------------------------------------------------------


def test_ticks_are_read_lazily_so_an_error_late_in_the_file_comes_late(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", HEADER, tick_obj(100.0), tick_obj(102.0), "{oops")
    header, ticks = read_trace(path)
    assert next(ticks).t == 100.0
    assert next(ticks).t == 102.0
    with pytest.raises(TraceError, match="line 4"):
        next(ticks)


def test_a_line_over_the_limit_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace, "MAX_LINE_BYTES", 2000)
    big = tick_obj(102.0, padding="x" * 5000)
    path = write_lines(tmp_path / "t.jsonl", HEADER, tick_obj(100.0), big)
    assert "line 3: line longer than 2000 bytes" in str(error_of(path))


def test_a_cut_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", HEADER, tick_obj(100.0))
    with path.open("a") as fh:
        fh.write('{"t": 102.0, "host": {"mem_')
    reader = trace.TraceReader(path)
    assert [t.t for t in reader] == [100.0]
    assert reader.problems == ["line 3: incomplete last line ignored"]


def test_extra_keys_are_ignored_at_every_level(tmp_path: Path) -> None:
    obj = tick_obj(100.0, balloon_period_s=2)
    obj["seq"] = 7
    obj["host"]["swap_total_kib"] = 0
    path = write_lines(tmp_path / "t.jsonl", HEADER | {"daemon": "0.1"}, obj)
    assert next(read_trace(path)[1]).samples["vm"].actual_kib == 1048576


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", HEADER, "", tick_obj(100.0), "  ")
    assert len(list(read_trace(path)[1])) == 1


# --- untrusted statistics: dropped, never fatal --------------------------------------------


def test_garbage_statistics_are_dropped_and_counted_not_fatal(tmp_path: Path) -> None:
    stats = {
        "stat-available-memory": 600 << 20,
        "stat-oom-kills": 18446744073709551615,  # QEMU's "not reported"
        "stat-alloc-stalls": "137",
        "stat-direct-scans": -5,
        "stat-swap-in": 2**70,
        "stat-async-scans": 1.5,
        "stat-from-the-future": 1,
    }
    path = write_lines(tmp_path / "t.jsonl", HEADER, tick_obj(100.0, stats=stats))
    reader = trace.TraceReader(path)
    (tick,) = list(reader)
    assert dict(tick.samples["vm"].stats) == {"stat-available-memory": 600 << 20}
    assert reader.problem_count == 4
    assert all(p.startswith("line 2: guest 'vm': ") for p in reader.problems)


# --- malformed input: an error naming the file and the line --------------------------------


@pytest.mark.parametrize(
    ("lines", "line_no", "words"),
    [
        pytest.param([], 1, "empty file", id="empty"),
        pytest.param(["not json"], 1, "not valid JSON", id="header-not-json"),
        pytest.param([[1, 2]], 1, "must be the trace header", id="header-array"),
        pytest.param([HEADER | {"format": "csv"}], 1, "not an autoballoon trace", id="format"),
        pytest.param([HEADER | {"version": 3}], 1, "version 3 is not supported", id="version"),
        pytest.param([HEADER | {"version": "1"}], 1, "'version' must be an integer", id="v-str"),
        pytest.param(
            [{k: v for k, v in HEADER.items() if k != "host"}],
            1,
            "missing required key 'host'",
            id="header-missing-host",
        ),  # fmt: skip
        pytest.param(
            [HEADER | {"interval_s": 0}], 1, "'interval_s' must be positive", id="interval"
        ),  # fmt: skip
        pytest.param([HEADER, tick_obj(), '{"t": 1,'], 3, "not valid JSON", id="bad-json"),
        pytest.param([HEADER, tick_obj(), "[]"], 3, "a tick must be an object", id="array"),
        pytest.param(
            [HEADER, tick_obj(actual_kib="1048576")],
            2,
            "guest 'vm': 'actual_kib' must be a non-negative integer, not string",
            id="wrong-type",
        ),  # fmt: skip
        pytest.param(
            [HEADER, tick_obj(max_kib=1.5e6)], 2, "'max_kib' must be a non-negative", id="float-kib"
        ),  # fmt: skip
        pytest.param(
            [HEADER, tick_obj(last_update=True)], 2, "not boolean true", id="bool-is-not-int"
        ),  # fmt: skip
        pytest.param([HEADER, tick_obj(actual_kib=-1)], 2, "non-negative", id="negative"),
        pytest.param(
            [HEADER, tick_obj(stats=[])], 2, "'stats' must be an object", id="stats-array"
        ),  # fmt: skip
        pytest.param([HEADER, tick_obj(t="now")], 2, "'t' must be a number", id="t-string"),
        pytest.param(
            [HEADER, '{"t": NaN, "host": {}, "guests": {}}'], 2, "NaN", id="nan"
        ),  # fmt: skip
        pytest.param(
            [HEADER, json.dumps(tick_obj()).replace("100.0", "1e400")],
            2,
            "'t' must be a number",
            id="overflows-to-infinity",
        ),  # fmt: skip
        pytest.param(
            [HEADER, {"t": 100.0, "guests": {}}],
            2,
            "missing required key 'host'",
            id="missing-host",
        ),  # fmt: skip
        pytest.param(
            [HEADER, tick_obj(102.0), tick_obj(100.0)], 3, "goes backwards", id="time-backwards"
        ),  # fmt: skip
    ],
)
def test_malformed_input_is_an_error_naming_the_line(
    tmp_path: Path, lines: list[object], line_no: int, words: str
) -> None:
    path = write_lines(tmp_path / "bad.jsonl", *lines) if lines else tmp_path / "bad.jsonl"
    if not lines:
        path.touch()
    err = error_of(path)
    assert str(err).startswith(f"{path}: line {line_no}: ")
    assert words in str(err)
    assert err.line_no == line_no


def test_a_missing_guest_key_is_named(tmp_path: Path) -> None:
    obj = tick_obj()
    del obj["guests"]["vm"]["uuid"]
    err = error_of(write_lines(tmp_path / "t.jsonl", HEADER, obj))
    assert "line 2: guest 'vm': missing required key 'uuid'" in str(err)


def test_a_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "nope.jsonl")


def test_invalid_utf8_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", HEADER)
    with path.open("ab") as fh:
        fh.write(b'{"t": "\xff\xfe"}\n')
    assert "line 2" in str(error_of(path))


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.jsonl")))
def test_every_committed_fixture_reads_cleanly(name: str) -> None:
    reader = trace.TraceReader(FIXTURES / name)
    ticks = list(reader)
    assert ticks, f"{name} has no ticks"
    assert all(a.t <= b.t for a, b in zip(ticks, ticks[1:], strict=False))


# --- version 2: what replay needs to equal the live run -------------------------------------

POLICIES = PolicySet(
    GuestPolicy(mode="proactive", floor_mib=256),
    HostPolicy(reserve_mib=512),
    (PolicyLayer("/p/db.toml", Match(names=("db-*",), uuids=("U-1",)), {"priority": 10}),),
    "/p/default.toml",
)


def test_the_fields_the_live_decision_reads_are_recorded_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    live = replace(sample(7000.0, name="a"), stats_period_s=60, stats_age_s=1.25, rss_kib=512000)
    host = replace(HOST, t=7000.0)  # the core's clock, not the wall clock
    with TraceWriter(path, 2.0, "h", run=trace.RecordedRun(POLICIES, False)) as w:
        w.write_tick(1.7e9, host, {"a": live}, now=7000.0)
    header, ticks = read_trace(path)
    assert header["version"] == 2
    assert trace.recorded_run(header) == trace.RecordedRun(POLICIES, False)
    (tick,) = ticks
    assert (tick.t, tick.now, tick.clock) == (1.7e9, 7000.0, 7000.0)
    assert tick.samples == {"a": live} and tick.host == host
    resolved = trace.recorded_run(header).policies
    assert resolved is not None and resolved.resolve("db-1")[0] == POLICIES.resolve("db-1")[0]


def test_a_policy_set_with_an_infinite_field_is_recorded(tmp_path: Path) -> None:
    never = PolicySet(GuestPolicy(stable_s=float("inf")))  # TOML's `stable_s = inf`
    path = tmp_path / "t.jsonl"
    TraceWriter(path, 1.0, "h", run=trace.RecordedRun(never, False)).close()
    assert trace.recorded_run(read_trace(path)[0]).policies == never


def test_a_version_1_tick_reads_with_the_old_meaning(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", HEADER, tick_obj(100.0))
    header, ticks = read_trace(path)
    assert trace.recorded_run(header) == trace.RecordedRun(None, None)
    (tick,) = ticks
    s = tick.samples["vm"]
    assert (tick.now, tick.clock, s.t, tick.host.t) == (None, 100.0, 100.0, 100.0)
    assert (s.stats_period_s, s.stats_age_s, s.rss_kib) == (None, None, None)
    assert (tick.run, tick.policies) == (None, None)


def test_an_appended_run_and_a_reload_are_marked_on_their_tick(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, 1.0, "h", run=trace.RecordedRun(POLICIES, False)) as w:
        w.write_tick(100.0, HOST, {"vm": sample(100.0)})
    other = PolicySet(GuestPolicy(mode="observe"))
    with TraceWriter(path, 1.0, "h", run=trace.RecordedRun(other, True)) as w:
        w.write_tick(101.0, HOST, {"vm": sample(101.0)})
        w.write_tick(102.0, HOST, {"vm": sample(102.0)}, policies=POLICIES)
        w.write_tick(103.0, HOST, {"vm": sample(103.0)})
    header, ticks = read_trace(path)
    assert trace.recorded_run(header).policies == POLICIES
    got = [(t.run, t.policies) for t in ticks]
    assert got == [
        (None, None),
        (trace.RecordedRun(other, True), None),
        (None, POLICIES),
        (None, None),
    ]


def test_the_writer_refuses_to_append_to_a_version_1_trace(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", HEADER, tick_obj(100.0))
    before = path.read_text()
    with pytest.raises(TraceError, match="version 1 trace.*record to a new file"):
        TraceWriter(path, 1.0, "h")
    assert path.read_text() == before


@pytest.mark.parametrize(
    ("where", "key", "value", "words"),
    [
        ("guest", "stats_period_s", "10", "'stats_period_s' must be a number"),
        ("guest", "stats_age_s", None, "'stats_age_s' must be a number"),
        ("guest", "rss_kib", -1, "'rss_kib' must be a non-negative integer"),
        ("tick", "now", "soon", "'now' must be a number"),
        ("tick", "run", [], "'run' must be an object"),
        ("tick", "policies", {"layers": []}, "missing required key 'default'"),
        ("tick", "policies", {"default": {"mode": "yolo"}, "host": {}, "layers": []},
         "'mode'"),
    ],
)  # fmt: skip
def test_a_malformed_version_2_key_is_an_error_naming_the_line(
    tmp_path: Path, where: str, key: str, value: object, words: str
) -> None:
    obj = tick_obj(100.0, **{key: value}) if where == "guest" else tick_obj(100.0) | {key: value}
    path = write_lines(tmp_path / "t.jsonl", HEADER | {"version": 2}, obj)
    err = error_of(path)
    assert err.line_no == 2 and words in str(err), str(err)


def test_recorded_policies_this_version_cannot_read_say_to_pass_policies(tmp_path: Path) -> None:
    recorded = trace.policies_record(POLICIES)
    recorded["default"]["from_a_newer_autoballoon"] = 1
    path = write_lines(tmp_path / "t.jsonl", HEADER | {"version": 2, "policies": recorded})
    err = error_of(path)
    assert err.line_no == 1 and "replay it with --policies DIR" in str(err), str(err)
