"""The daemon's life as an operator and systemd see it, on libvirt's test driver.

Start: a URI that can never be opened stops `run` at once with exit 4, libvirt not answering
with 75, a second daemon on the same lock with 5, naming the holder's pid. Running: READY=1,
then WATCHDOG=1 and a STATUS= line after each tick, to $NOTIFY_SOCKET. Reload: a changed
`exclude` stops the daemon resizing that guest from the next tick on; a changed interval
reschedules the ticks; a setting that needs a restart is named, not applied. Rollback:
`autoballoon release` gives guests back their maximum, and leaves the ones the daemon may not
resize.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from autoballoon import exits
from autoballoon.backends.libvirt import LibvirtHypervisor
from autoballoon.cli import main
from autoballoon.commands.run_command import add_config_flags
from autoballoon.commands.status_command import EXIT_FAILING, assess
from autoballoon.config import DaemonConfig
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.units import KIB_PER_MIB
from autoballoon.daemon import Controller
from autoballoon.hostlock import HostLock, LockHeld
from autoballoon.logs import PriorityFormatter, Repeating, make_formatter
from autoballoon.policyfiles import load_policy_dir
from autoballoon.sdnotify import notify, watchdog_s
from autoballoon.status import StatusDocument

from .helpers import ROOT, URI, autoballoon, start_daemon, stop_daemon, wait_for
from .test_status import doc

START_KIB = 2048 * KIB_PER_MIB
MAX_KIB = 8192 * KIB_PER_MIB


def run_cmd(tmp: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    (tmp / "policies").mkdir(exist_ok=True)
    return autoballoon(
        "run",
        "--policies",
        str(tmp / "policies"),
        "--no-strict-modes",
        "--status-file",
        str(tmp / "status.json"),
        "--lock-file",
        str(tmp / "autoballoon.lock"),
        *args,
        timeout=timeout,
    )


# --- start ---------------------------------------------------------------------------------------
def test_a_uri_that_cannot_be_opened_stops_at_once_with_exit_4(tmp_path: Path) -> None:
    started = time.monotonic()
    done = run_cmd(tmp_path, "--uri", "bogus:///x", "--duration", "30")
    assert done.returncode == exits.LIBVIRT_REFUSED == 4, done.stderr
    assert time.monotonic() - started < 20  # not --duration's 30 s
    errors = [x for x in done.stderr.splitlines() if "ERROR" in x]
    assert len(errors) == 1 and "refusing to start" in errors[0] and "bogus:///x" in errors[0]


def test_libvirt_not_answering_at_start_exits_75(tmp_path: Path) -> None:
    done = run_cmd(
        tmp_path, "--uri", "qemu+unix:///system?socket=/nonexistent/sock", "--duration", "30"
    )
    assert done.returncode == exits.LIBVIRT_UNREACHABLE == 75, done.stderr
    assert "libvirt does not answer" in done.stderr


def test_a_second_daemon_on_the_same_lock_refuses_naming_the_pid(tmp_path: Path) -> None:
    first = start_daemon(tmp_path, tmp_path / "status.json")
    try:
        wait_for((tmp_path / "status.json").exists)
        other = tmp_path / "other"
        other.mkdir()
        second = run_cmd(
            other, "--uri", URI, "--dry-run", "--lock-file", str(tmp_path / "autoballoon.lock")
        )
        assert second.returncode == exits.LOCKED == 5, second.stderr
        (line,) = [x for x in second.stderr.splitlines() if "ERROR" in x]
        assert f"pid {first.pid}" in line and "refusing to start" in line
    finally:
        stop_daemon(first)


def test_the_lock_is_held_until_released_and_keeps_the_pid(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.lock"
    lock = HostLock(path)
    lock.acquire()
    assert path.read_text().strip() == str(os.getpid())
    with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
        HostLock(path).acquire()
    lock.release()
    again = HostLock(path)
    again.acquire()
    again.release()


def test_the_default_lock_is_per_uri_under_run() -> None:
    assert DaemonConfig().lock_path() == Path("/run/autoballoon/qemu-system.lock")
    assert DaemonConfig(uri=URI).lock_path() == Path("/run/autoballoon/test-default.lock")


# --- systemd notification ------------------------------------------------------------------------
def receive_all(sock: socket.socket) -> list[str]:
    got = []
    sock.settimeout(0.1)
    while True:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            return got


def test_ready_then_a_watchdog_ping_and_status_after_each_tick(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        (tmp_path / "policies").mkdir()
        env = os.environ | {"NOTIFY_SOCKET": str(path)}
        done = subprocess.run(
            [sys.executable, "-m", "autoballoon", "run", "--uri", URI, "--interval", "0.5",
             "--duration", "2.5", "--policies", str(tmp_path / "policies"), "--no-strict-modes",
             "--status-file", str(tmp_path / "s.json"), "--lock-file", str(tmp_path / "l")],
            cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        messages = receive_all(sock)
    assert messages[0].startswith("READY=1\nMAINPID=")
    pings = [m for m in messages if m.startswith("WATCHDOG=1\n")]
    assert len(pings) >= 2
    assert "STATUS=1 guest(s) managed; last tick" in pings[-1] and " ok " in pings[-1]
    assert messages[-1].startswith("STOPPING=1")


def test_notify_reaches_an_abstract_socket_and_is_silent_without_one() -> None:
    name = f"autoballoon-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"WATCHDOG=1"
    assert not notify("READY=1", {})
    assert watchdog_s({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}) == 60
    assert watchdog_s({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None


# --- status of a daemon whose ticks fail ---------------------------------------------------------
def test_status_of_a_daemon_whose_ticks_fail_is_failing_not_running() -> None:
    now = time.time()
    failing = doc(
        last_tick={"t": now - 2, "duration_s": 0.01, "error": "cannot connect to qemu:///system"},
        failing_since=now - 600,
        last_good_tick_at=now - 605,
    )
    v = assess(StatusDocument.model_validate(failing), now, alive=lambda _pid: True)
    assert (v.status, v.exit_code) == ("failing", EXIT_FAILING)
    assert "failed for 10 min" in v.message and "last good tick 10 min ago" in v.message


# --- reload --------------------------------------------------------------------------------------
@pytest.fixture
def shared_domain() -> Iterator[libvirt.virDomain]:
    """The test driver's domain, as seen by a daemon in this process (state is shared while a
    connection is open)."""
    conn = libvirt.open(URI)
    dom = conn.lookupByName("test")
    dom.setMemory(START_KIB)
    yield dom
    dom.setMemory(START_KIB)
    conn.close()


def test_a_reload_that_excludes_a_guest_stops_resizing_it_from_the_next_tick(
    tmp_path: Path, shared_domain: libvirt.virDomain, caplog: pytest.LogCaptureFixture
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    # No cooldown and no hold after someone else's resize: the guest, shrunk by the test
    # between ticks, is given its memory back at every tick while the daemon may resize it.
    (policies / "default.toml").write_text("[policy]\ncooldown_s = 0\nexternal_hold_s = 0\n")
    config_file = tmp_path / "autoballoon.toml"
    config_file.write_text(
        f"[daemon]\nuri = '{URI}'\npolicy_dir = '{policies}'\nstrict_modes = false\n"
    )
    config = DaemonConfig(uri=URI, policy_dir=policies, strict_modes=False)
    hv = LibvirtHypervisor(URI)
    pset = load_policy_dir(policies, strict_modes=False)
    ctl = Controller(config, hv, pset, config_path=config_file)
    try:
        ctl.tick()  # statistics decades old: "unknown", given memory back
        assert shared_domain.info()[2] > START_KIB
        shared_domain.setMemory(START_KIB)
        ctl.tick()
        assert shared_domain.info()[2] > START_KIB, "resized again while included"

        config_file.write_text(config_file.read_text() + "exclude = ['test']\n")
        ctl.request_reload()  # what SIGHUP does
        shared_domain.setMemory(START_KIB)
        caplog.set_level("INFO", logger="autoballoon")
        report = ctl.tick()  # the first tick after the signal
        assert shared_domain.info()[2] == START_KIB, "resized although excluded"
        assert report.guests == ()
        ctl.tick()
        assert shared_domain.info()[2] == START_KIB
        (line,) = [r.getMessage() for r in caplog.records if "reload" in r.getMessage()]
        assert line == "reload: applied exclude [] -> [test]"
    finally:
        hv.close()


def test_sighup_applies_exclude_and_interval_at_once_and_names_what_needs_a_restart(
    tmp_path: Path,
) -> None:
    (tmp_path / "policies").mkdir()
    status = tmp_path / "status.json"
    config_file = tmp_path / "autoballoon.toml"
    base = (
        f"[daemon]\nuri = '{URI}'\npolicy_dir = '{tmp_path / 'policies'}'\n"
        f"strict_modes = false\nstatus_file = '{status}'\nlock_file = '{tmp_path / 'l'}'\n"
    )
    config_file.write_text(base + "interval_s = 30\n")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "autoballoon", "run", "--config", str(config_file)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(status.exists)
        first = json.loads(status.read_text())
        assert first["ticks"] == 1 and [g["name"] for g in first["guests"]] == ["test"]
        config_file.write_text(base + "interval_s = 0.5\nexclude = ['test']\nmetrics_port = 9\n")
        daemon.send_signal(signal.SIGHUP)
        # Under the old interval the next tick is 30 s away: only a rescheduled job ticks now,
        # and it no longer reads the excluded guest.
        wait_for(lambda: json.loads(status.read_text())["ticks"] >= 3, timeout=15)
        now = json.loads(status.read_text())
        assert now["guests"] == [] and now["interval_s"] == 0.5
    finally:
        _out, err = stop_daemon(daemon)
    (line,) = [x for x in err.splitlines() if "reload" in x]
    assert line.endswith(
        "reload: applied interval_s 30.0 -> 0.5, exclude [] -> [test]; "
        "not applied, need a restart: metrics_port 0 -> 9"
    ), err


def test_reload_reschedules_and_lists_settings_that_need_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_file = tmp_path / "autoballoon.toml"
    policies = tmp_path / "policies"
    policies.mkdir()
    base = f"[daemon]\nuri = '{URI}'\npolicy_dir = '{policies}'\nstrict_modes = false\n"
    config_file.write_text(base)
    config = DaemonConfig(uri=URI, policy_dir=policies, strict_modes=False)
    hv = LibvirtHypervisor(URI)
    ctl = Controller(config, hv, PolicySet(GuestPolicy()), config_path=config_file)
    moved: list[float] = []
    ctl.reschedule = moved.append
    caplog.set_level("INFO", logger="autoballoon")
    config_file.write_text(base.replace(URI, "qemu:///system") + "interval_s = 2\n")
    try:
        assert ctl.reload()
    finally:
        hv.close()
    assert moved == [2.0] and ctl.config.interval_s == 2.0
    assert ctl.config.uri == URI, "a setting that needs a restart keeps its running value"
    (line,) = [r for r in caplog.records if "reload" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        "reload: applied interval_s 5.0 -> 2.0; not applied, need a restart: "
        f"uri {URI} -> qemu:///system"
    )


# --- rollback ------------------------------------------------------------------------------------
def release(tmp: Path, *args: str) -> int:
    policies = tmp / "policies"
    policies.mkdir(exist_ok=True)
    return main(
        ["release", "--uri", URI, "--policies", str(policies), "--no-strict-modes",
         "--lock-file", str(tmp / "autoballoon.lock"), *args]
    )  # fmt: skip


def test_release_gives_a_shrunk_guest_back_its_maximum(
    tmp_path: Path, shared_domain: libvirt.virDomain, capsys: pytest.CaptureFixture[str]
) -> None:
    shared_domain.setMemory(1024 * KIB_PER_MIB)
    assert release(tmp_path, "--all", "--dry-run") == 0
    assert shared_domain.info()[2] == 1024 * KIB_PER_MIB, "a dry run changes nothing"
    assert release(tmp_path, "--all") == 0
    assert shared_domain.info()[2] == shared_domain.info()[1] == MAX_KIB
    out = capsys.readouterr().out
    assert "[dry-run] guest test would go back to 8192 MiB from 1024 MiB" in out
    assert "guest test back to 8192 MiB from 1024 MiB (the domain's maximum)" in out
    assert "released 1 guest(s) of 1 on test:///default" in out


@pytest.mark.parametrize(
    ("policy", "args", "why"),
    [
        ("[policy]\nenabled = false\n", (), "opted out (enabled = false)"),
        ("[policy]\nmode = 'observe'\n", (), "observe mode"),
        ("", ("--config", "{cfg}"), "excluded by the config"),
    ],
)
def test_release_leaves_the_guests_the_daemon_may_not_resize_and_says_so(
    tmp_path: Path,
    shared_domain: libvirt.virDomain,
    capsys: pytest.CaptureFixture[str],
    policy: str,
    args: tuple[str, ...],
    why: str,
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "default.toml").write_text(policy)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[daemon]\nexclude = ['test']\n")
    shared_domain.setMemory(1024 * KIB_PER_MIB)
    assert release(tmp_path, "test", *(a.format(cfg=cfg) for a in args)) == 0
    assert shared_domain.info()[2] == 1024 * KIB_PER_MIB
    assert f"guest test left as it is, 1024 MiB ({why})" in capsys.readouterr().out


def test_release_refuses_while_the_daemon_holds_the_lock(
    tmp_path: Path, shared_domain: libvirt.virDomain, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = HostLock(tmp_path / "autoballoon.lock")
    lock.acquire()
    try:
        shared_domain.setMemory(1024 * KIB_PER_MIB)
        assert release(tmp_path, "--all") == exits.LOCKED
        assert shared_domain.info()[2] == 1024 * KIB_PER_MIB
        assert f"pid {os.getpid()}" in capsys.readouterr().err
    finally:
        lock.release()


# --- logs for the journal ------------------------------------------------------------------------
def record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("autoballoon", level, __file__, 1, msg, None, None)


def test_every_journal_line_carries_its_priority_json_and_continuations_too() -> None:
    human = make_formatter("human", "always")
    first, second = human.format(record(logging.ERROR, "reload failed:\nf.toml: bad")).split("\n")
    assert first.startswith("<3>") and first.endswith("ERROR   reload failed:")
    assert second == "<3>f.toml: bad"
    json_line = make_formatter("json", "always").format(record(logging.WARNING, "a\nb"))
    (line,) = json_line.split("\n")
    assert line.startswith("<4>{") and json.loads(line[3:])["msg"] == "a\nb"
    assert not isinstance(make_formatter("json", "never"), PriorityFormatter)


def test_json_lines_under_the_journal_are_prefixed(tmp_path: Path) -> None:
    log_file = tmp_path / "journal.txt"
    with log_file.open("w") as fh:
        st = os.fstat(fh.fileno())
        (tmp_path / "policies").mkdir()
        env = os.environ | {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        done = subprocess.run(
            [sys.executable, "-m", "autoballoon", "run", "--once", "--uri", URI, "--interval",
             "0.5", "--log-format", "json", "--policies", str(tmp_path / "policies"),
             "--no-strict-modes", "--status-file", str(tmp_path / "s.json"), "--lock-file",
             str(tmp_path / "l")],
            cwd=ROOT, stderr=fh, stdout=subprocess.DEVNULL, timeout=60, env=env,
        )  # fmt: skip
    assert done.returncode == 0
    lines = log_file.read_text().splitlines()
    assert lines and all(x[:3] in ("<6>", "<4>", "<3>") and x[3] == "{" for x in lines), lines


def test_a_condition_repeating_every_tick_is_logged_at_start_once_a_minute_and_at_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    rep = Repeating(logging.getLogger("autoballoon"), clock=lambda: now[0])
    caplog.set_level("INFO", logger="autoballoon")
    for _ in range(720):  # an hour of 5 s ticks with libvirt down
        rep.happened("libvirt", logging.ERROR, "libvirt unreachable: tick skipped")
        now[0] += 5
    assert rep.ended("libvirt", "libvirt back")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 + 59 + 1  # start, one a minute, end: not 720
    assert lines[0] == "libvirt unreachable: tick skipped"
    assert lines[1] == (
        "libvirt unreachable: tick skipped (still; 13 times in 60 s, 12 since the last line)"
    )
    assert lines[-1] == "libvirt back (after 720 time(s) over 3600 s)"


# --- the unit and the command line agree with the code -----------------------------------------
def test_the_unit_waits_for_readiness_watches_and_does_not_restart_what_cannot_work() -> None:
    unit = (ROOT / "contrib" / "systemd" / "autoballoon.service").read_text()
    keys = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0] != "#")
    assert keys["Type"] == "notify" and keys["NotifyAccess"] == "main"
    assert keys["WatchdogSec"] == "60s"
    assert {int(c) for c in keys["RestartPreventExitStatus"].split()} == set(exits.NOT_RESTARTED)
    assert keys["Restart"] == "on-failure"
    assert (keys["StartLimitIntervalSec"], keys["StartLimitBurst"]) == ("300", "5")
    assert "ExecStartPre" not in keys  # the daemon checks its policies itself: exit 3


def test_every_setting_is_a_run_flag_with_its_docstring_as_help() -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    by_dest = {a.dest: a for a in parser._actions}
    for name, info in DaemonConfig.model_fields.items():
        action = by_dest[name]
        assert action.help and (info.description or "").split()[0] in action.help
    args = parser.parse_args(
        ["--interval", "2", "--exclude", "a", "--exclude", "b", "--no-strict-modes",
         "--log-priority", "always", "--lock-file", "/tmp/x.lock", "--policies", "/p"]
    )  # fmt: skip
    assert (args.interval_s, args.exclude, args.strict_modes) == (2.0, ["a", "b"], False)
    assert (args.log_priority, str(args.lock_file), str(args.policy_dir)) == (
        "always",
        "/tmp/x.lock",
        "/p",
    )
