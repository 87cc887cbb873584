"""`autoballoon status` against a running daemon, and the status file's safety.

The end-to-end test runs the real `autoballoon run` on libvirt's test driver as a subprocess
and reads it back with the real `autoballoon status`; the rest pins the verdicts (running,
stopped, gone, stale) and the file's permissions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoballoon.backends.libvirt import LibvirtHypervisor
from autoballoon.commands.status_command import (
    EXIT_NOT_RUNNING,
    EXIT_RUNNING,
    EXIT_STALE,
    assess,
    render,
)
from autoballoon.config import DaemonConfig
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.units import KIB_PER_MIB
from autoballoon.daemon import Controller
from autoballoon.status import FORMAT, StatusDocument, StatusSink, write_atomic

from .helpers import URI, autoballoon, start_daemon, stop_daemon, wait_for


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def as_nobody(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *map(str, argv)],
        capture_output=True,
        text=True,
    )


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory everyone may traverse (pytest's own is 0700), so that only the status
    file's modes stand between `nobody` and the file."""
    base = Path(tempfile.mkdtemp(prefix="autoballoon-status-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


def test_status_of_a_running_then_stopped_daemon(public_tmp: Path) -> None:
    status_file = public_tmp / "s" / "status.json"
    daemon = start_daemon(public_tmp, status_file)
    try:
        wait_for(lambda: status_file.exists() or daemon.poll() is not None)
        assert daemon.poll() is None, daemon.communicate()
        wait_for(lambda: json.loads(status_file.read_text())["ticks"] >= 2)

        done = autoballoon("status", "--json", "--status-file", str(status_file))
        assert done.returncode == EXIT_RUNNING, done.stderr
        doc = json.loads(done.stdout)
        assert doc["status"] == "running" and doc["pid"] == daemon.pid
        assert doc["mode"] == "live" and doc["uri"] == URI
        assert doc["ticks"] >= 2 and doc["failed_ticks"] == 0
        assert doc["libvirt"] == {"errors": 0, "reconnects": 0}
        assert doc["last_tick_age_s"] < 5 and doc["last_tick"]["duration_s"] < 5
        assert doc["host"]["mem_available_kib"] > 0
        (guest,) = doc["guests"]
        assert guest["name"] == "test"
        assert guest["max_kib"] == 8192 * KIB_PER_MIB
        # The test domain starts at 2 GiB; its decades-old statistics (class unknown) make the
        # controller give memory back at once, so the daemon has resized it by now.
        assert guest["actual_kib"] > 2048 * KIB_PER_MIB
        assert guest["class"] == "unknown" and guest["stats"] == "standard"
        assert guest["last_action"]["action"] == "deflate"
        assert guest["last_action"]["from_kib"] == 2048 * KIB_PER_MIB
        assert guest["last_action"]["result"] == "applied"
        assert "stale" in guest["last_action"]["reason"]

        table = autoballoon("status", "--status-file", str(status_file))
        assert table.returncode == EXIT_RUNNING, table.stderr
        assert table.stdout.startswith(f"autoballoon is running (pid {daemon.pid}); live on")
        row = next(line for line in table.stdout.splitlines() if line.startswith("test "))
        assert row.split()[1:6] == [
            str(guest["actual_kib"] // KIB_PER_MIB),
            "8192",
            str(guest["floor_kib"] // KIB_PER_MIB),
            str(guest["available_kib"] // KIB_PER_MIB),
            "unknown",
        ]

        # Permissions: 0600 in a 0700 directory; each alone keeps another user out.
        assert mode(status_file) == 0o600
        assert mode(status_file.parent) == 0o700
        control = public_tmp / "public.txt"
        control.write_text("readable\n")
        control.chmod(0o644)
        assert as_nobody("cat", control).stdout == "readable\n"  # setpriv itself works
        nobody = as_nobody("cat", status_file)
        assert nobody.returncode != 0 and "Permission denied" in nobody.stderr
        assert nobody.stdout == ""
        status_file.parent.chmod(0o755)  # even with the directory opened up...
        try:
            nobody = as_nobody("cat", status_file)
        finally:
            status_file.parent.chmod(0o700)
        assert nobody.returncode != 0 and "Permission denied" in nobody.stderr  # ...the file
        assert nobody.stdout == ""
        assert [p.name for p in status_file.parent.iterdir()] == ["status.json"]  # no temp left
    finally:
        out, err = stop_daemon(daemon)
    assert daemon.returncode == 0, err
    assert "SIGTERM: stopping" in err

    done = autoballoon("status", "--json", "--status-file", str(status_file))
    assert done.returncode == EXIT_NOT_RUNNING
    doc = json.loads(done.stdout)
    assert doc["status"] == "stopped" and doc["state"] == "stopped"
    assert "autoballoon is not running" in done.stderr
    table = autoballoon("status", "--status-file", str(status_file))
    assert table.returncode == EXIT_NOT_RUNNING
    assert table.stdout.startswith(f"autoballoon is not running: pid {daemon.pid} stopped")


def test_sigusr1_shows_where_each_thread_is_and_the_daemon_goes_on(tmp_path: Path) -> None:
    status_file = tmp_path / "status.json"
    daemon = start_daemon(tmp_path, status_file)
    try:
        wait_for(lambda: status_file.exists() or daemon.poll() is not None)
        assert daemon.poll() is None, daemon.communicate()
        daemon.send_signal(signal.SIGUSR1)
        ticks = json.loads(status_file.read_text())["ticks"]
        wait_for(lambda: json.loads(status_file.read_text())["ticks"] >= ticks + 2)
    finally:
        _, err = stop_daemon(daemon)
    assert daemon.returncode == 0, err
    # The main thread waiting for a stop, the scheduler's and libvirt's event loop.
    assert "Current thread" in err and "in _wait_for_stop" in err, err
    assert "in _main_loop" in err and "in virEventRunDefaultImpl" in err, err
    assert "SIGTERM: stopping" in err


def test_no_status_file_means_not_running(tmp_path: Path) -> None:
    missing = tmp_path / "nothing" / "status.json"
    done = autoballoon("status", "--status-file", str(missing))
    assert done.returncode == EXIT_NOT_RUNNING
    assert done.stdout == ""
    assert f"autoballoon is not running: no status file {missing}" in done.stderr
    done = autoballoon("status", "--json", "--status-file", str(missing))
    assert done.returncode == EXIT_NOT_RUNNING
    assert json.loads(done.stdout)["status"] == "not-running"


def test_unreadable_file_is_said_so(tmp_path: Path) -> None:
    bad = tmp_path / "status.json"
    bad.write_text("{not json")
    done = autoballoon("status", "--status-file", str(bad))
    assert done.returncode == 4 and "not a status file" in done.stderr


def doc(**over: object) -> dict[str, object]:
    now = time.time()
    base: dict[str, object] = {
        "format": FORMAT,
        "state": "running",
        "pid": 4242,
        "mode": "live",
        "uri": URI,
        "interval_s": 5.0,
        "stale_after_s": 35.0,
        "started_at": now - 3600,
        "updated_at": now - 2,
        "ticks": 700,
        "failed_ticks": 0,
        "overruns": 0,
        "libvirt": {"errors": 0, "reconnects": 0},
        "last_tick": {"t": now - 2, "duration_s": 0.01, "error": None},
        "guests": [],
        "skipped": {},
    }
    return base | over


@pytest.mark.parametrize(
    ("over", "alive", "status", "code", "words"),
    [
        ({}, True, "running", EXIT_RUNNING, "is running (pid 4242)"),
        ({}, False, "not-running", EXIT_NOT_RUNNING, "pid 4242 is gone"),
        ({"updated_at": time.time() - 600}, True, "stale", EXIT_STALE, "is stale"),
        ({"state": "stopped", "stopped_at": time.time() - 60}, False, "stopped", 1, "stopped"),
        ({"state": "stopped", "stopped_at": time.time() - 60}, True, "stopped", 1, "stopped"),
    ],
)
def test_verdicts(over: dict[str, object], alive: bool, status: str, code: int, words: str) -> None:
    v = assess(StatusDocument.model_validate(doc(**over)), time.time(), alive=lambda _pid: alive)
    assert (v.status, v.exit_code) == (status, code)
    assert words in v.message


def test_killed_daemon_is_reported_gone(tmp_path: Path) -> None:
    status_file = tmp_path / "status.json"
    daemon = start_daemon(tmp_path, status_file)
    try:
        wait_for(lambda: status_file.exists() or daemon.poll() is not None)
    finally:
        daemon.kill()
        daemon.communicate(timeout=30)
    done = autoballoon("status", "--status-file", str(status_file))
    assert done.returncode == EXIT_NOT_RUNNING
    assert f"pid {daemon.pid} is gone (it did not stop cleanly" in done.stderr


def test_render_shows_skipped_guests_and_failed_actions() -> None:
    now = time.time()
    guest = {
        "name": "web-1",
        "uuid": "6695eb01-f6a4-8304-79aa-97f2502e193f",
        "actual_kib": 1536 * KIB_PER_MIB,
        "max_kib": 2048 * KIB_PER_MIB,
        "policy_max_kib": 2048 * KIB_PER_MIB,
        "floor_kib": 512 * KIB_PER_MIB,
        "available_kib": 700 * KIB_PER_MIB,
        "class": "none",
        "basis": "extended",
        "stats": "extended",
        "decision": {"action": "hold", "target_kib": 1536 * KIB_PER_MIB, "reason": "cooldown"},
        "last_action": {
            "t": now - 300,
            "action": "inflate",
            "from_kib": 2048 * KIB_PER_MIB,
            "to_kib": 1536 * KIB_PER_MIB,
            "class": "none",
            "reason": "none: 1200 MiB available; taking 512 MiB (proactive)",
            "result": "guest error: no balloon",
        },
    }
    d = StatusDocument.model_validate(
        doc(guests=[guest], skipped={"win-1": "no balloon device"}, reclaimed_kib=512 * KIB_PER_MIB)
    )
    out = render(d, assess(d, now, alive=lambda _pid: True), now)
    assert "web-1  1536  2048    512    700  none   extended  inflate 5 min ago" in out
    assert "5 min ago: inflate 2048 -> 1536 MiB: none: 1200 MiB available" in out
    assert "FAILED (guest error: no balloon)" in out
    assert "win-1  no balloon device" in out
    assert "held back: 512 MiB from 1 guest(s)" in out


def controller(tmp_path: Path, path: Path) -> tuple[Controller, LibvirtHypervisor, StatusSink]:
    config = DaemonConfig(uri=URI, policy_dir=tmp_path, status_file=path)
    hv = LibvirtHypervisor(URI)
    sink = StatusSink.for_config(config)
    ctl = Controller(config, hv, PolicySet(GuestPolicy()), dry_run=True, sinks=[sink])
    return ctl, hv, sink


def test_close_marks_the_file_stopped(tmp_path: Path) -> None:
    ctl, hv, sink = controller(tmp_path, tmp_path / "run" / "status.json")
    ctl.tick()
    written = json.loads(sink.path.read_text())
    assert written["state"] == "running" and written["mode"] == "dry-run"
    assert written["guests"][0]["last_action"]["result"] == "dry-run"
    ctl.finish()
    hv.close()
    written = json.loads(sink.path.read_text())
    assert written["state"] == "stopped" and written["stopped_at"] is not None


def test_failed_tick_keeps_the_guests_and_shows_the_error(tmp_path: Path) -> None:
    ctl, hv, sink = controller(tmp_path, tmp_path / "status.json")
    ctl.tick()
    hv.uri = "qemu+unix:///system?socket=/nonexistent/sock"
    hv.close()
    ctl.tick()
    hv.close()  # stops the background reconnection the failed tick started
    written = json.loads(sink.path.read_text())
    assert written["failed_ticks"] == 1 and written["last_tick"]["error"]
    assert [g["name"] for g in written["guests"]] == ["test"]
    typed = StatusDocument.model_validate(written)
    out = render(typed, assess(typed, time.time()), time.time())
    assert "last tick FAILED: cannot connect" in out


def test_another_live_daemons_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    theirs = doc(pid=os.getppid(), hostname=socket.gethostname())
    write_atomic(path, json.dumps(theirs))
    ctl, hv, _sink = controller(tmp_path, path)
    ctl.tick()
    ctl.finish()
    hv.close()
    assert json.loads(path.read_text()) == theirs


def test_directory_is_created_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_atomic(tmp_path / "a" / "status.json", "{}\n")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a") == 0o700
    assert mode(tmp_path / "a" / "status.json") == 0o600


@pytest.mark.parametrize(
    ("address", "url"),
    [("127.0.0.1", "http://127.0.0.1:9177/metrics"), ("::1", "http://[::1]:9177/metrics")],
)
def test_the_status_file_brackets_an_ipv6_metrics_address(address: str, url: str) -> None:
    config = DaemonConfig(metrics_address=address, metrics_port=9177)
    assert StatusSink.for_config(config).metrics_url == url
