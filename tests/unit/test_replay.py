"""`autoballoon replay`: recorded traces through the production engine, via the CLI.

The fixtures are under tests/fixtures/: synthetic-*.jsonl are hand-made (see make_synthetic.py);
lab-*.jsonl are recordings of real lab guests and are used by the same tests when present;
lab-ramp and lab-cache are also replayed closed loop (as if the balloon had followed), for what
the law must do with them.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from autoballoon.cli import main
from autoballoon.commands.replay_command import Progress
from autoballoon.core.classify import Basis, PressureClass
from autoballoon.core.decide import Action, Decision, EngineState, step
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.samples import GuestSample
from autoballoon.core.state import STEP_GROWTH_MAX
from autoballoon.replay import reclaimable_kib
from autoballoon.report import HELD, GuestReading, GuestRecord
from autoballoon.trace import TraceReader, policies_record
from tests.factories import sample

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
OOM_TRACES = ("synthetic-oom.jsonl", "lab-oom.jsonl")
IDLE_TRACES = ("synthetic-idle.jsonl", "lab-idle.jsonl")
ALL_TRACES = sorted({*OOM_TRACES, *IDLE_TRACES, "synthetic-mixed.jsonl"})


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"{name} not recorded yet (tests/fixtures/{name})")
    return path


@pytest.fixture
def policies(tmp_path: Path) -> dict[str, Path]:
    """One policy directory per mode, everything else the built-in defaults."""
    out = {}
    for mode in ("observe", "on-demand", "proactive"):
        d = tmp_path / "policies" / mode
        d.mkdir(parents=True)
        (d / "default.toml").write_text(f'[policy]\nmode = "{mode}"\n')
        out[mode] = d
    return out


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["replay", *args])
    out, err = capsys.readouterr()
    return code, out, err


def replay_json(
    capsys: pytest.CaptureFixture[str], trace: Path, policy_dir: Path, *extra: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    code, out, err = run_cli(capsys, str(trace), "--policies", str(policy_dir), "--json", *extra)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    *ticks, last = lines
    return ticks, last["summary"]


def by_guest(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(r["guest"], []).append(r)
    return out


# --- scenarios --------------------------------------------------------------------------


def recorded(path: Path) -> dict[tuple[str, float], GuestSample]:
    """Every recorded sample, by (guest, tick time)."""
    return {(n, tick.t): g for tick in TraceReader(path) for n, g in tick.samples.items()}


@pytest.mark.parametrize("name", OOM_TRACES)
@pytest.mark.parametrize("mode", ["on-demand", "proactive"])
def test_every_oom_is_answered_by_a_deflate_and_nothing_is_inflated_after_it(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path], name: str, mode: str
) -> None:
    """Every `oom` tick of every guest: a large deflate (clamped to the maximum), or a hold
    when already there. Never an inflation after it (within ``pressure_block_s``, longer than
    these traces). Each deflate answers kills not answered before: the evidence counts only
    from our own last change. Replay is open loop (the recorded balloon never follows), so a
    guest that goes on being killed, as in lab-oom.jsonl (the recording squeezed it and never
    gave memory back), is answered on every tick, always with the same target: that is the
    law, one answer per new kill, not a ratchet."""
    path = fixture(name)
    samples = recorded(path)
    records, summary = replay_json(capsys, path, policies[mode])
    p = GuestPolicy()
    oom_ticks = 0
    for guest, recs in by_guest(records).items():
        ooms = [i for i, r in enumerate(recs) if r["class"] == "oom"]
        if not ooms:
            continue
        answered = -1  # the guest's OOM-kill counter at our last answer
        for i in ooms:
            r = recs[i]
            oom_ticks += 1
            kills = samples[guest, r["t"]].stats["stat-oom-kills"]
            hi = samples[guest, r["t"]].max_kib
            assert "OOM kill" in r["reason"]
            if r["current_kib"] >= hi:
                assert r["action"] == "hold", r
                continue
            assert r["action"] == "deflate" and r["rule"] == "rescue", r
            assert r["target_kib"] == min(r["current_kib"] + int(p.deflate_large_ratio * hi), hi)
            assert kills > answered, f"kill {kills} answered twice at {r['t']}"
            answered = kills
        after = recs[ooms[0] + 1 :]
        assert not [r for r in after if r["action"] == "inflate"], "inflated after an OOM"
        assert summary["guests"][guest]["actions"]["deflate"] >= 1
    assert oom_ticks, f"no guest in {name} is ever classified oom"


def test_lab_ramp_is_inflated_only_out_of_what_stays_spare() -> None:
    """lab-ramp.jsonl: a real guest's working set grows by about 3 MiB/s for a minute, then
    stays, with no reclaim counter ever moving (so it is `none` throughout). Replayed closed
    loop (each take leaves the guest that much less available): the law has no trend term, so
    it takes during the ramp too, but only one step per cooldown and never into the headroom,
    and the guest is never squeezed to its low water. Nothing is ever deflated or rescued."""
    taken = replay_through_step(fixture("lab-ramp.jsonl"))
    p = GuestPolicy()
    decisions = [d for d, _ in taken]
    assert {d.klass for d in decisions[1:]} == {PressureClass.NONE}
    inflates = [(d, avail) for d, avail in taken if d.action is Action.INFLATE]
    assert len(inflates) >= 2
    assert not [d for d in decisions if d.action is Action.DEFLATE]
    assert within_growing_steps([d for d, _ in inflates], p)
    for d, avail in inflates:
        assert avail - (d.current_kib - d.target_kib) >= p.headroom_kib(d.current_kib), d
    times = [d.t for d, _ in inflates]
    assert all(b - a >= p.cooldown_s for a, b in zip(times, times[1:], strict=False))
    assert all(avail >= p.low_water_kib(d.current_kib) for d, avail in taken)


def test_lab_cache_is_inflated_above_its_floor_and_only_while_calm() -> None:
    """lab-cache.jsonl: a real guest holding 98 MiB of page cache, squeezed from 384 to 170 MiB
    by the recording, 93 MiB available. Replayed as recorded (open loop, as `autoballoon
    replay` does), it is inflated: the cache is spare by MemAvailable. Every take is one step
    at most, after a cooldown, only while calm, never below the floor nor into the headroom.
    Replayed closed loop, the recording's own squeeze is someone else's resize: held for
    ``external_hold_s`` (longer than the trace), never inflated on top of it."""
    p = GuestPolicy()
    inflates = [
        (d, avail)
        for d, avail in replay_through_step(fixture("lab-cache.jsonl"), open_loop=True)
        if d.action is Action.INFLATE
    ]
    assert len(inflates) >= 3
    assert within_growing_steps([d for d, _ in inflates], p)
    for d, avail in inflates:
        assert d.klass in (PressureClass.NONE, PressureClass.CGROUP_OOM), d
        assert d.target_kib >= d.floor_kib == p.floor_kib(d.max_kib)
        assert avail - (d.current_kib - d.target_kib) >= p.headroom_kib(d.current_kib), d
    times = [d.t for d, _ in inflates]
    assert all(b - a >= p.cooldown_s for a, b in zip(times, times[1:], strict=False))
    closed = replay_through_step(fixture("lab-cache.jsonl"))
    resized = [d for d, _ in closed if d.current_kib < d.max_kib]
    assert resized and all(d.action is Action.HOLD for d in resized)
    assert all("someone else" in d.reason for d in resized), resized[0]


def within_growing_steps(inflates: list[Decision], p: GuestPolicy) -> bool:
    """The first take is one step at most, and the n-th in a row at most n steps, never more
    than ``STEP_GROWTH_MAX`` (the step grows only over calm takes in a row)."""
    for n, d in enumerate(inflates, 1):
        steps = min(n, STEP_GROWTH_MAX)
        if d.current_kib - d.target_kib > steps * int(p.inflate_step_ratio * d.max_kib) + 1:
            return False
    return True


def replay_through_step(path: Path, open_loop: bool = False) -> list[tuple[Decision, int]]:
    """The recording through ``step`` as if its balloon had followed (proactive, defaults):
    each guest's size and MemAvailable are shifted by what the engine has taken so far. With
    ``open_loop``, the recording as it is (what `autoballoon replay` does). Returns each
    decision with the available KiB the engine saw."""
    pset = PolicySet(GuestPolicy(mode="proactive"))
    state = EngineState()
    moved: dict[str, int] = {}  # KiB taken (negative: given) relative to the recording
    out = []
    for tick in TraceReader(path):
        shifted = {}
        for n, s in tick.samples.items():
            delta = moved.get(n, 0)
            stats = dict(s.stats)
            avail = stats["stat-available-memory"] - delta * 1024
            stats["stat-available-memory"] = max(avail, 0)
            shifted[n] = replace(s, actual_kib=s.actual_kib - delta, stats=stats)
        decisions, state = step(tick.t, tick.host, shifted, state, pset, open_loop=open_loop)
        for d in decisions:
            out.append((d, shifted[d.guest].available_kib or 0))
            if d.action is not Action.HOLD and not open_loop:
                moved[d.guest] = moved.get(d.guest, 0) + d.current_kib - d.target_kib
    return out


@pytest.mark.parametrize("name", IDLE_TRACES)
def test_an_idle_guest_is_none_and_inflated_under_proactive(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path], name: str
) -> None:
    records, summary = replay_json(capsys, fixture(name), policies["proactive"])
    for guest, recs in by_guest(records).items():
        classes = {r["class"] for r in recs}
        assert classes <= {"none", "unknown"}, classes
        assert summary["guests"][guest]["classes"]["none"] >= len(recs) - 2
        inflates = [r for r in recs if r["action"] == "inflate"]
        assert inflates, f"{guest} never inflated"
        assert all(r["target_kib"] < r["current_kib"] for r in inflates)
        assert not [r for r in recs if r["action"] == "deflate"]
        assert summary["guests"][guest]["reclaimed_mib"] > 0


def test_an_idle_guest_on_a_host_with_plenty_is_left_alone_on_demand(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path]
) -> None:
    records, _ = replay_json(capsys, fixture("synthetic-idle.jsonl"), policies["on-demand"])
    assert {r["action"] for r in records} == {"hold"}
    assert any("host is above its reserve" in r["reason"] for r in records)


@pytest.mark.parametrize("name", ALL_TRACES)
def test_observe_mode_only_ever_holds(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path], name: str
) -> None:
    records, summary = replay_json(capsys, fixture(name), policies["observe"])
    assert records
    assert {r["action"] for r in records} == {"hold"}
    assert all(r["target_kib"] == r["current_kib"] for r in records)
    for g in summary["guests"].values():
        assert g["actions"]["inflate"] == g["actions"]["deflate"] == 0
        assert g["direction_changes"] == 0


def test_on_demand_takes_only_while_the_host_is_short(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path]
) -> None:
    path = fixture("synthetic-mixed.jsonl")
    short = {
        t.t for t in TraceReader(path) if t.host.mem_available_kib < 0.2 * t.host.mem_total_kib
    }
    records, _ = replay_json(capsys, path, policies["on-demand"])
    inflates = [r for r in records if r["action"] == "inflate"]
    assert inflates
    assert all(r["t"] in short for r in inflates)
    proactive, _ = replay_json(capsys, path, policies["proactive"])
    assert len([r for r in proactive if r["action"] == "inflate"]) > len(inflates)


def test_a_guest_without_the_6_12_counters_is_classified_from_standard_stats(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path]
) -> None:
    records, _ = replay_json(capsys, fixture("synthetic-mixed.jsonl"), policies["proactive"])
    legacy = by_guest(records)["legacy-1"]
    assert {r["class"] for r in legacy} == {"unknown", "none"}
    assert [r for r in legacy if r["action"] == "inflate"]


def test_garbage_stats_warn_on_stderr_but_the_replay_succeeds(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path]
) -> None:
    path = fixture("synthetic-mixed.jsonl")
    code, out, err = run_cli(capsys, str(path), "--policies", str(policies["on-demand"]))
    assert code == 0
    assert "warning:" in err and "stat-swap-in: not an integer" in err
    assert "line 35" in err
    assert "warning" not in out


# --- output contract --------------------------------------------------------------------


def test_json_lines_have_the_documented_keys_and_a_summary_last(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path]
) -> None:
    path = fixture("synthetic-mixed.jsonl")
    records, summary = replay_json(capsys, path, policies["proactive"])
    keys = {"t", "guest", "class", "action", "current_kib", "target_kib", "reason", "rule"}
    assert all(set(r) == keys for r in records)
    assert set(summary["guests"]) == {"db-1", "legacy-1", "web-2"}
    for guest, recs in by_guest(records).items():
        s = summary["guests"][guest]
        assert s["ticks"] == len(recs) == sum(s["classes"].values())
        assert s["actions"] == {a: sum(r["action"] == a for r in recs) for a in s["actions"]}
    assert summary["ticks"] == 90 and summary["host"] == "lab-synthetic"


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(("--json",), id="json"),
        pytest.param((), id="table"),
        pytest.param(("--json", "--guest", "web-*"), id="json-one-guest"),
    ],
)
def test_same_trace_and_policy_give_byte_identical_output(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path], extra: tuple[str, ...]
) -> None:
    path = str(fixture("synthetic-mixed.jsonl"))
    args = (path, "--policies", str(policies["proactive"]), *extra)
    first = run_cli(capsys, *args)
    second = run_cli(capsys, *args)
    assert first[0] == 0
    assert first[1].encode() == second[1].encode()
    assert first[1]


def test_compare_shows_both_policy_sets_side_by_side(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path]
) -> None:
    path = str(fixture("synthetic-mixed.jsonl"))
    a, b = str(policies["on-demand"]), str(policies["proactive"])
    code, out, _ = run_cli(capsys, path, "--compare", a, b)
    assert code == 0
    assert f"A: {a}" in out and f"B: {b}" in out
    assert "web-2" in out and "reclaimed MiB" in out

    code, out, _ = run_cli(capsys, path, "--compare", a, b, "--json")
    *lines, last = [json.loads(x) for x in out.splitlines()]
    assert code == 0
    assert all(set(r) == {"t", "guest", "current_kib", "a", "b"} for r in lines)
    summary = last["summary"]
    assert summary["a"]["policies"] == a and summary["b"]["policies"] == b
    web_a, web_b = summary["a"]["guests"]["web-2"], summary["b"]["guests"]["web-2"]
    assert web_b["actions"]["inflate"] > web_a["actions"]["inflate"]


def test_compare_and_policies_together_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path]
) -> None:
    p = str(policies["observe"])
    with pytest.raises(SystemExit) as info:
        main(["replay", "x.jsonl", "--policies", p, "--compare", p, p])
    assert info.value.code == 2


def test_the_table_names_every_guest_and_its_classes(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path]
) -> None:
    path = str(fixture("synthetic-oom.jsonl"))
    code, out, err = run_cli(capsys, path, "--policies", str(policies["on-demand"]))
    assert code == 0 and err == ""
    assert "web-1" in out and "oom 1" in out and "reclaimable MiB" in out


# --- bad input: a clear message naming the file and line, exit 1, no traceback ------------


def write_bad_trace(tmp_path: Path, bad_line: str) -> Path:
    good = (FIXTURES / "synthetic-idle.jsonl").read_text().splitlines()[:4]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([*good, bad_line, *good[1:2]]) + "\n")
    return path


@pytest.mark.parametrize(
    ("bad_line", "words"),
    [
        pytest.param('{"t": 1764133210.0, "host": ', "not valid JSON", id="bad-json"),
        pytest.param(
            '{"t": 1764133210.0, "host": {"mem_total_kib": "24G", "mem_available_kib": 1,'
            ' "psi_some_avg10": null, "psi_full_avg10": null}, "guests": {}}',
            "'mem_total_kib' must be a non-negative integer",
            id="wrong-type",
        ),  # fmt: skip
        pytest.param(
            '{"t": 1764133210.0, "guests": {}}', "missing required key 'host'", id="missing-key"
        ),  # fmt: skip
    ],
)
@pytest.mark.parametrize("json_out", [False, True])
def test_a_malformed_line_is_an_error_naming_it(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path], tmp_path: Path,
    bad_line: str, words: str, json_out: bool,
) -> None:  # fmt: skip
    path = write_bad_trace(tmp_path, bad_line)
    extra = ("--json",) if json_out else ()
    code, _, err = run_cli(capsys, str(path), "--policies", str(policies["proactive"]), *extra)
    assert code == 1
    assert err.startswith(f"error: {path}: line 5: ")
    assert words in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (
            '{"format": "autoballoon-trace", "version": 9, "host": "h", "interval_s": 1, '
            '"started": 0}',
            "version 9 is not supported",
        ),  # fmt: skip
        ('{"format": "prometheus", "version": 1}', "not an autoballoon trace"),
        ('{"t": 1764133210.0, "host": {}, "guests": {}}', "not an autoballoon trace"),
    ],
)
def test_a_wrong_header_is_an_error_naming_line_1(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path], tmp_path: Path,
    header: str, words: str,
) -> None:  # fmt: skip
    path = tmp_path / "t.jsonl"
    path.write_text(header + "\n")
    code, out, err = run_cli(capsys, str(path), "--policies", str(policies["observe"]))
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {path}: line 1: ") and words in err


def test_a_missing_trace_is_an_error(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, str(tmp_path / "nope.jsonl"), "--policies",
                           str(policies["observe"]))  # fmt: skip
    assert code == 1 and "nope.jsonl: cannot read" in err


def test_a_bad_policy_directory_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = tmp_path / "pol"
    d.mkdir()
    (d / "default.toml").write_text('[policy]\nmode = "yolo"\n')
    path = str(FIXTURES / "synthetic-idle.jsonl")
    code, out, err = run_cli(capsys, path, "--policies", str(d))
    assert (code, out) == (1, "")
    assert "default.toml" in err and "mode" in err


def test_strict_modes_apply_unless_switched_off(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path]
) -> None:
    d = policies["observe"]
    d.chmod(0o777)
    path = str(FIXTURES / "synthetic-idle.jsonl")
    code, _, err = run_cli(capsys, path, "--policies", str(d))
    assert code == 1 and "writable by group or others" in err
    code, _, _ = run_cli(capsys, path, "--policies", str(d), "--no-strict-modes")
    assert code == 0


# --- plot and progress ------------------------------------------------------------------


def test_plot_writes_a_png(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "replay.png"
    path = str(fixture("synthetic-mixed.jsonl"))
    code, _, err = run_cli(
        capsys, path, "--compare", str(policies["on-demand"]), str(policies["proactive"]),
        "--plot", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_what_to_install(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path = str(FIXTURES / "synthetic-idle.jsonl")
    code, out, err = run_cli(capsys, path, "--policies", str(policies["observe"]),
                             "--plot", str(tmp_path / "x.png"))  # fmt: skip
    assert (code, out) == (1, "")
    assert "install autoballoon[plot]" in err


def test_no_progress_indicator_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path]
) -> None:
    path = str(FIXTURES / "synthetic-idle.jsonl")
    code, _, err = run_cli(capsys, path, "--policies", str(policies["observe"]))
    assert code == 0 and err == ""


def test_progress_draws_a_bar_and_clears_it() -> None:
    reader = TraceReader(FIXTURES / "synthetic-idle.jsonl")
    stream = io.StringIO()
    progress = Progress(reader, stream, enabled=True)
    for _ in reader:
        progress.next_draw = 0.0
        progress.tick()
    progress.finish()
    text = stream.getvalue()
    assert "100%" in text and text.endswith("\r")


# --- the summary's arithmetic -----------------------------------------------------------


def hold_decision(s: GuestSample, floor_mib: int) -> Decision:
    return Decision(
        s.name, s.t, s.actual_kib, s.actual_kib, Action.HOLD, PressureClass.NONE, Basis.EXTENDED,
        "", floor_kib=floor_mib * 1024, available_kib=s.available_kib,
    )  # fmt: skip


def test_reclaimable_is_max_minus_the_smallest_size_that_keeps_the_headroom() -> None:
    s = sample(0.0, actual_mib=1024, max_mib=1024, avail_mib=824)  # uses 200 MiB
    # smallest = max(200 + 64, 200 / 0.85 = 235.3) = 264 MiB, above the 256 MiB floor
    row = GuestRecord.of(GuestReading(s), hold_decision(s, floor_mib=256), HELD)
    assert reclaimable_kib(row, headroom_mib=64, headroom_ratio=0.15) == (1024 - 264) * 1024
    # a 300 MiB floor wins
    row = GuestRecord.of(GuestReading(s), hold_decision(s, floor_mib=300), HELD)
    assert reclaimable_kib(row, headroom_mib=64, headroom_ratio=0.15) == (1024 - 300) * 1024


# --- the policies a trace records ---------------------------------------------------------


def recorded_trace(tmp_path: Path, mode: str, dry_run: bool) -> Path:
    """synthetic-mixed.jsonl as a version 2 trace recording ``mode`` and ``dry_run``."""
    header, *ticks = fixture("synthetic-mixed.jsonl").read_text().splitlines(keepends=True)
    recorded = policies_record(PolicySet(GuestPolicy.model_validate({"mode": mode})))
    obj = json.loads(header) | {"version": 2, "dry_run": dry_run, "policies": recorded}
    path = tmp_path / f"{mode}.jsonl"
    path.write_text(json.dumps(obj) + "\n" + "".join(ticks))
    return path


def test_a_trace_that_records_no_policies_asks_for_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, str(fixture("synthetic-mixed.jsonl")))
    assert (code, out) == (1, "")
    assert "records no policies" in err and "pass --policies DIR" in err


@pytest.mark.parametrize("dry_run", [False, True])
def test_without_policies_the_recorded_ones_decide(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path], tmp_path: Path,
    dry_run: bool,
) -> None:  # fmt: skip
    path = recorded_trace(tmp_path, "proactive", dry_run)
    code, out, err = run_cli(capsys, str(path), "--json")
    assert code == 0 and "not the policies recorded" not in err
    *ticks, last = [json.loads(x) for x in out.splitlines()]
    assert last["summary"]["loop"] == ("open" if dry_run else "closed")
    assert last["summary"]["policies"] == "(recorded in the trace)"
    if dry_run:  # open loop under the same policies: what --policies gives
        same, _ = replay_json(capsys, path, policies["proactive"])
        assert ticks == same
    assert any(t["action"] == "inflate" for t in ticks)


def test_policies_given_override_the_recorded_ones_and_say_so(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Path], tmp_path: Path
) -> None:
    path = recorded_trace(tmp_path, "proactive", False)
    code, out, err = run_cli(capsys, str(path), "--policies", str(policies["observe"]))
    assert code == 0
    assert f"replaying under {policies['observe']}, not the policies recorded" in err
    assert "open loop" in out
    ticks, _ = replay_json(capsys, path, policies["observe"])
    assert {t["action"] for t in ticks} == {"hold"}
