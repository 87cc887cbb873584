"""The daemon's logs as an operator (or a log shipper) reads them: the real `autoballoon run`.

`run --once` on libvirt's test driver takes two readings and acts: the test domain's decades-old
statistics make it deflate, which the log sink reports as one action line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from .helpers import ROOT, URI


def once_cmd(tmp: Path, *args: str) -> list[str]:
    """`autoballoon run --once` on the test driver, with a policy dir and status file in tmp."""
    policies = tmp / "policies"
    policies.mkdir(exist_ok=True)
    return [
        sys.executable, "-m", "autoballoon", "run", "--once", "--uri", URI, "--interval", "0.5",
        "--policies", str(policies), "--no-strict-modes", "--status-file",
        str(tmp / "status.json"), "--lock-file", str(tmp / "autoballoon.lock"), *args,
    ]


def run_once(tmp: Path, *args: str, env: dict[str, str] | None = None) -> list[str]:
    done = subprocess.run(
        once_cmd(tmp, *args), cwd=ROOT, capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # logs go to stderr only
    lines = done.stderr.splitlines()
    assert lines
    return lines


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    return env | extra


def test_json_format_is_one_object_per_line_with_the_action_fields(tmp_path: Path) -> None:
    lines = run_once(tmp_path, "--log-format", "json", env=clean_env())
    docs = [json.loads(line) for line in lines]  # every line, not only the action lines
    for d in docs:
        assert {"ts", "time", "level", "logger", "msg"} <= set(d)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", d["time"])
    actions = [d for d in docs if "action" in d]
    assert len(actions) == 1  # the second reading holds (cooldown)
    (a,) = actions
    assert a["level"] == "info"
    assert a["guest"] == "test"
    assert a["action"] == "deflate"
    assert a["class"] == "unknown"
    assert a["from_kib"] == 2097152 and isinstance(a["to_kib"], int) and a["to_kib"] > 2097152
    assert "stale" in a["reason"]
    assert a["result"] == "applied" and a["dry_run"] is False
    assert a["msg"].startswith(f"guest test: deflate 2048 -> {a['to_kib'] // 1024} MiB [unknown]")


# The default test guest has no statistics period, and dry-run sets none (it changes no guest):
# this host's guest has one, so there is something to decide.
HOST_WITH_PERIOD = """<node><domain type='test'><name>test</name>
<memory unit='KiB'>8388608</memory><currentMemory unit='KiB'>2097152</currentMemory>
<os><type>hvm</type></os><devices><memballoon model='virtio'><stats period='1'/></memballoon>
</devices></domain></node>"""


def test_dry_run_json_says_would(tmp_path: Path) -> None:
    host = tmp_path / "host.xml"
    host.write_text(HOST_WITH_PERIOD)
    args = ("--log-format", "json", "--dry-run", "--uri", f"test://{host}")
    docs = [json.loads(x) for x in run_once(tmp_path, *args)]
    (a,) = (d for d in docs if d.get("action") not in (None, "hold"))
    assert a["dry_run"] is True and a["result"] == "dry-run"
    assert a["msg"].startswith("[dry-run] guest test: would deflate 2048 ->")
    # Before it, the first tick's hold: each guest's class, what holds it and why.
    (h,) = (d for d in docs if d.get("action") == "hold")
    assert h["msg"].startswith("[dry-run] guest test: hold 2048 MiB [unknown] ")
    assert h["rule"] and f"[rule {h['rule']}]" in h["msg"] and h["dry_run"] is True


def test_a_dry_run_explains_each_guest_and_a_missing_stats_period(tmp_path: Path) -> None:
    from autoballoon.commands.status_command import assess, read_status, render

    lines = run_once(tmp_path, "--dry-run")
    holds = [x for x in lines if "[dry-run] guest test: hold" in x]
    assert len(holds) == 1, "one line per guest while what holds it stays the same"
    fix = "virsh dommemstat --period 10 --live test"
    assert "[unknown] unknown: guest has sent no statistics; never inflated [rule unknown]" in (
        holds[0]
    )
    assert fix in holds[0] and "a dry run never writes" in holds[0]
    # The human status view says the same: class, what holds the guest and why, the fix.
    doc = read_status(tmp_path / "status.json")
    out = render(doc, assess(doc, doc.updated_at), doc.updated_at)
    assert "now (what the last tick did or, in a dry run, would do, and why):" in out
    assert "  test  hold [unknown]: unknown: guest has sent no statistics" in out
    assert fix in out


def test_human_format_has_a_time_on_a_terminal_and_none_under_systemd(tmp_path: Path) -> None:
    plain = run_once(tmp_path, env=clean_env())
    assert all(re.match(r"\d\d:\d\d:\d\d (INFO|WARNING|ERROR) ", line) for line in plain), plain
    assert any("guest test: deflate 2048 ->" in line for line in plain)

    # Under systemd, stderr *is* the journal stream whose device:inode JOURNAL_STREAM names.
    log_file = tmp_path / "journal.txt"
    with log_file.open("w") as fh:
        st = os.fstat(fh.fileno())
        env = clean_env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        done = subprocess.run(
            once_cmd(tmp_path),
            cwd=ROOT,
            stderr=fh,
            stdout=subprocess.DEVNULL,
            timeout=60,
            env=env,
        )
    assert done.returncode == 0
    journal = log_file.read_text().splitlines()
    # journald stamps each line itself; ours would be a second, less precise one. The <N>
    # prefix is the syslog priority journald files the line under.
    assert all(re.match(r"<[3467]>(INFO|WARNING|ERROR) ", line) for line in journal), journal
    assert any(line.startswith("<6>INFO guest test: deflate 2048 ->") for line in journal)

    # an inherited JOURNAL_STREAM that is not our stderr is ignored (time stamps stay)
    inherited = run_once(tmp_path, env=clean_env(JOURNAL_STREAM="8:12345"))
    assert all(re.match(r"\d\d:\d\d:\d\d (INFO|WARNING|ERROR) ", x) for x in inherited)
