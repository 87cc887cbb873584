"""The Prometheus endpoint, scraped over HTTP from a Controller wired like the daemon.

The controller gets the sinks ``build_sinks`` gives the real daemon, on libvirt's test driver;
only the tick loop is driven by the test instead of the scheduler.
"""

from __future__ import annotations

import logging
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoballoon import __version__
from autoballoon.backends.libvirt import LibvirtHypervisor
from autoballoon.commands.wiring import build_sinks
from autoballoon.config import DaemonConfig
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.daemon import Controller
from autoballoon.hypervisor import GuestError
from autoballoon.metrics import MetricsSink
from autoballoon.sinks import LogSink
from autoballoon.status import StatusSink

from .helpers import URI, extended_controller, free_port

GIB = 1024**3

EXPECTED_TYPES = {
    "autoballoon_up": "gauge",
    "autoballoon_build_info": "gauge",
    "autoballoon_dry_run": "gauge",
    "autoballoon_libvirt_connected": "gauge",
    "autoballoon_ticks_total": "counter",
    "autoballoon_failed_ticks_total": "counter",
    "autoballoon_tick_overruns_total": "counter",
    "autoballoon_libvirt_errors_total": "counter",
    "autoballoon_libvirt_reconnects_total": "counter",
    "autoballoon_tick_duration_seconds": "histogram",
    "autoballoon_last_tick_timestamp_seconds": "gauge",
    "autoballoon_host_memory_available_bytes": "gauge",
    "autoballoon_host_memory_total_bytes": "gauge",
    "autoballoon_reclaimed_memory_bytes": "gauge",
    "autoballoon_guests": "gauge",
    "autoballoon_guest_balloon_bytes": "gauge",
    "autoballoon_guest_balloon_target_bytes": "gauge",
    "autoballoon_guest_balloon_max_bytes": "gauge",
    "autoballoon_guest_balloon_floor_bytes": "gauge",
    "autoballoon_guest_available_bytes": "gauge",
    "autoballoon_guest_info": "gauge",
    "autoballoon_guest_pressure_class": "gauge",
    "autoballoon_guest_resizes_total": "counter",
    "autoballoon_guest_resize_failures_total": "counter",
    "process_resident_memory_bytes": "gauge",
}


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        body: str = r.read().decode()
        return body


def types(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value; ``class_=`` stands for the label ``class``."""
    labels = {k.rstrip("_"): v for k, v in labels.items()}
    return samples(text)[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Controller, LibvirtHypervisor, str]]:
    port = free_port()
    config = DaemonConfig(
        uri=URI,
        policy_dir=tmp_path,
        status_file=tmp_path / "run" / "status.json",
        metrics_port=port,
    )
    hv = LibvirtHypervisor(URI)
    sinks = build_sinks(config, record=None)
    assert [type(s) for s in sinks] == [LogSink, StatusSink, MetricsSink]
    ctl = Controller(config, hv, PolicySet(GuestPolicy()), sinks=sinks)
    yield ctl, hv, f"http://127.0.0.1:{port}/metrics"
    ctl.finish()
    hv.close()


def test_names_and_types(daemon: tuple[Controller, LibvirtHypervisor, str]) -> None:
    ctl, _hv, url = daemon
    ctl.tick()
    text = scrape(url)
    found = types(text)
    for name, kind in EXPECTED_TYPES.items():
        assert found.get(name) == kind, f"{name}: {found.get(name)}, expected {kind}"
    for name in found:
        # Prometheus naming: our prefix (or the client's standard process metrics), counters
        # end in _total and nothing else does.
        assert re.fullmatch(r"(autoballoon|process|python)_[a-z0-9_]+", name), name
        assert name.endswith("_total") == (found[name] == "counter"), name
    assert value(text, "autoballoon_ticks_total") == 1
    assert value(text, "autoballoon_up") == 1
    assert value(text, "autoballoon_libvirt_connected") == 1
    assert value(text, "autoballoon_build_info", version=__version__) == 1
    assert value(text, "autoballoon_dry_run") == 0
    assert value(text, "autoballoon_guests", state="controlled") == 1
    assert value(text, "autoballoon_guest_balloon_max_bytes", domain="test") == 8 * GIB
    (uuid,) = (
        dict(labels)["uuid"]
        for (name, labels), _v in samples(text).items()
        if name == "autoballoon_guest_info"
    )
    assert re.fullmatch(r"[0-9a-f-]{36}", uuid)
    classes = {
        labels: v
        for (name, labels), v in samples(text).items()
        if name == "autoballoon_guest_pressure_class"
    }
    # one series per guest: the current class only
    assert classes == {(("class", "unknown"), ("domain", "test")): 1}  # stats decades old
    # what the guest reported is decades old: not shown as current
    assert ("autoballoon_guest_extended_stats", (("domain", "test"),)) not in samples(text)
    assert ("autoballoon_guest_available_bytes", (("domain", "test"),)) not in samples(text)
    assert value(text, "autoballoon_tick_duration_seconds_count") == 1
    assert value(text, "autoballoon_host_memory_available_bytes") > 0


def test_values_follow_the_guest_and_the_decisions(
    daemon: tuple[Controller, LibvirtHypervisor, str],
) -> None:
    ctl, hv, url = daemon
    report = ctl.tick()
    (g,) = report.guests
    d = g.decision
    text = scrape(url)
    # The test domain starts at 2 GiB; its stale statistics make the controller deflate it.
    assert value(text, "autoballoon_guest_balloon_bytes", domain="test") == 2 * GIB
    assert value(text, "autoballoon_guest_balloon_target_bytes", domain="test") == (
        d.target_kib * 1024
    )
    assert d.target_kib * 1024 > 2 * GIB
    assert value(text, "autoballoon_reclaimed_memory_bytes") == 6 * GIB
    assert value(text, "autoballoon_guest_resizes_total", domain="test", action="deflate") == 1
    assert value(text, "autoballoon_guest_resizes_total", domain="test", action="inflate") == 0
    assert value(text, "autoballoon_guest_resize_failures_total", domain="test") == 0

    hv.set_balloon_kib("test", 1536 * 1024)  # someone else resizes the guest
    ctl.tick()
    text = scrape(url)
    assert value(text, "autoballoon_guest_balloon_bytes", domain="test") == 1.5 * GIB
    assert value(text, "autoballoon_reclaimed_memory_bytes") == 6.5 * GIB
    assert value(text, "autoballoon_ticks_total") == 2
    assert value(text, "autoballoon_tick_duration_seconds_count") == 2


def test_a_refused_change_counts_as_a_failure_not_a_resize(
    daemon: tuple[Controller, LibvirtHypervisor, str],
) -> None:
    ctl, hv, url = daemon

    def refuse(name: str, kib: int) -> None:
        raise GuestError(f"{name}: balloon target refused")

    hv.set_balloon_kib = refuse  # type: ignore[method-assign]
    (g,) = ctl.tick().guests
    assert g.decision.action == "deflate"  # the test domain's stale statistics
    text = scrape(url)
    assert value(text, "autoballoon_guest_resize_failures_total", domain="test") == 1
    assert value(text, "autoballoon_guest_resizes_total", domain="test", action="deflate") == 0


def test_series_of_a_guest_that_went_away_are_removed(
    daemon: tuple[Controller, LibvirtHypervisor, str],
) -> None:
    ctl, hv, url = daemon
    ctl.tick()
    assert 'domain="test"' in scrape(url)
    hv.connection.live().lookupByName("test").destroy()  # the test driver's state is per connection
    ctl.tick()
    text = scrape(url)
    assert 'domain="test"' not in text
    assert value(text, "autoballoon_guests", state="controlled") == 0
    assert value(text, "autoballoon_reclaimed_memory_bytes") == 0


def test_endpoint_is_read_only(daemon: tuple[Controller, LibvirtHypervisor, str]) -> None:
    ctl, _hv, url = daemon
    ctl.tick()
    before = value(scrape(url), "autoballoon_ticks_total")
    for method in ("POST", "PUT", "DELETE"):
        req = urllib.request.Request(url, data=b"autoballoon_ticks_total 0\n", method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 405
    assert value(scrape(url), "autoballoon_ticks_total") == before


def test_endpoint_binds_the_configured_address_only(
    daemon: tuple[Controller, LibvirtHypervisor, str],
) -> None:
    ctl, _hv, url = daemon
    (sink,) = (s for s in ctl.sinks if isinstance(s, MetricsSink))
    assert sink.server is not None
    assert sink.server.server_address[0] == "127.0.0.1"


def test_failed_tick_counts_and_shows_no_stale_picture(tmp_path: Path) -> None:
    sink = MetricsSink()  # no port: the registry only
    config = DaemonConfig(uri=URI, policy_dir=tmp_path, status_file=tmp_path / "s.json")
    hv = LibvirtHypervisor(URI)
    ctl = Controller(config, hv, PolicySet(GuestPolicy()), dry_run=True, sinks=[sink])
    ctl.tick()
    hv.uri = "qemu+unix:///system?socket=/nonexistent/sock"  # libvirt goes away
    hv.close()
    ctl.tick()
    hv.close()  # stops the background reconnection the failed tick started
    text = generate_latest(sink.registry).decode()
    assert value(text, "autoballoon_failed_ticks_total") == 1
    assert value(text, "autoballoon_ticks_total") == 1
    assert value(text, "autoballoon_up") == 1
    assert value(text, "autoballoon_libvirt_connected") == 0
    assert value(text, "autoballoon_dry_run") == 1
    assert value(text, "autoballoon_tick_duration_seconds_count") == 2
    # Nothing was read: no host or guest figure is shown as if it were current.
    assert "autoballoon_guest_" not in _series(text)
    assert "autoballoon_host_memory_available_bytes" not in _series(text)
    assert "autoballoon_reclaimed_memory_bytes" not in _series(text)


def _series(text: str) -> str:
    """The exposition without its HELP and TYPE lines."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def test_a_guest_whose_reading_fails_or_goes_stale_loses_its_gauges(tmp_path: Path) -> None:
    hv, ctl, sink = extended_controller(tmp_path)
    text = generate_latest(sink.registry).decode()
    assert value(text, "autoballoon_guest_available_bytes", domain="vm-612") > 0
    assert value(text, "autoballoon_guest_oom_kills_total", domain="vm-612") == 1
    assert value(text, "autoballoon_guest_pressure_class", domain="vm-612", class_="none")

    hv.stats_age_s = 3600  # QEMU still answers, with an hour-old report
    ctl.tick()
    text = generate_latest(sink.registry).decode()
    assert value(text, "autoballoon_guest_balloon_bytes", domain="vm-612") == GIB  # libvirt's
    assert value(text, "autoballoon_guest_pressure_class", domain="vm-612", class_="unknown")
    for gone in ("available_bytes", "extended_stats", "oom_kills_total", "major_faults_total"):
        assert f"autoballoon_guest_{gone}{{" not in _series(text), gone

    hv.error = "guest agent monitor: timed out"  # the guest's reading fails outright
    ctl.tick()
    text = generate_latest(sink.registry).decode()
    assert 'domain="vm-612"' not in _series(text)
    assert value(text, "autoballoon_guests", state="skipped") == 1
    assert value(text, "autoballoon_libvirt_connected") == 1  # the others are still read


def test_two_sinks_in_one_process_do_not_share_a_registry() -> None:
    a, b = MetricsSink(), MetricsSink()
    assert a.registry is not b.registry
    a.tick_duration.observe(1.0)
    assert (
        value(generate_latest(b.registry).decode(), "autoballoon_tick_duration_seconds_count") == 0
    )


def test_busy_port_is_logged_and_the_daemon_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    first = MetricsSink("127.0.0.1", free_port())
    assert first.server is not None
    port = first.server.server_address[1]
    try:
        with caplog.at_level(logging.ERROR, logger="autoballoon"):
            second = MetricsSink("127.0.0.1", port)
        assert second.server is None
        assert "running without metrics" in caplog.text
    finally:
        first.close()
