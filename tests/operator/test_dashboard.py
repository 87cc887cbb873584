"""The Grafana dashboard and the 6.12 counters it charts.

libvirt's test driver has no QEMU and so no 6.12 counters: here a small fake hypervisor reports
a guest that has them, through the real observer and controller, so every metric the dashboard
queries can be checked against a real scrape.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoballoon.config import DaemonConfig
from autoballoon.core.policy import GuestPolicy, PolicySet
from autoballoon.core.units import BYTES_PER_MIB
from autoballoon.daemon import Controller
from autoballoon.hypervisor import RawGuest, Reading
from autoballoon.metrics import MetricsSink

from .helpers import ROOT

DASHBOARD = ROOT / "contrib" / "grafana" / "autoballoon.json"


class ExtendedGuestHypervisor:
    """One guest that sends the Linux 6.12 counters (what QEMU's guest-stats gives the adapter)."""

    def __init__(self) -> None:
        self.errors = 0  # what LibvirtHypervisor counts, exposed when the hypervisor has them
        self.reconnects = 0
        self.stats: dict[str, object] = {
            "stat-available-memory": 600 * BYTES_PER_MIB,
            "stat-free-memory": 300 * BYTES_PER_MIB,
            "stat-total-memory": 1024 * BYTES_PER_MIB,
            "stat-swap-in": 0,
            "stat-swap-out": 0,
            "stat-major-faults": 10,
            "stat-oom-kills": 1,
            "stat-alloc-stalls": 20,
            "stat-async-scans": 300 * BYTES_PER_MIB,
            "stat-direct-scans": 40 * BYTES_PER_MIB,
            "stat-async-reclaims": 200 * BYTES_PER_MIB,
            "stat-direct-reclaims": 30 * BYTES_PER_MIB,
        }

    def read(self, wanted: Callable[[str], bool]) -> Reading:
        g = RawGuest(
            "vm-612", "uuid-612", 1024 * 1024, 2048 * 1024, int(time.time()), self.stats, "qmp"
        )
        return Reading([g])

    def set_balloon_kib(self, name: str, kib: int) -> None:
        pass

    def close(self) -> None:
        pass


def scrape_extended(tmp_path: Path) -> str:
    sink = MetricsSink()
    config = DaemonConfig(policy_dir=tmp_path, status_file=tmp_path / "s.json")
    ctl = Controller(
        config, ExtendedGuestHypervisor(), PolicySet(GuestPolicy()), dry_run=True, sinks=[sink]
    )
    ctl.tick()
    return generate_latest(sink.registry).decode()


def test_guest_counters_are_exposed_as_counters_in_base_units(tmp_path: Path) -> None:
    text = scrape_extended(tmp_path)
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }

    def v(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted({"guest": "vm-612", **labels}.items())))]

    assert "# TYPE autoballoon_guest_oom_kills_total counter" in text
    assert v("autoballoon_guest_oom_kills_total") == 1
    assert v("autoballoon_guest_alloc_stalls_total") == 20
    assert v("autoballoon_guest_scanned_bytes_total", reclaim="direct") == 40 * BYTES_PER_MIB
    assert v("autoballoon_guest_scanned_bytes_total", reclaim="async") == 300 * BYTES_PER_MIB
    assert v("autoballoon_guest_reclaimed_bytes_total", reclaim="direct") == 30 * BYTES_PER_MIB
    assert v("autoballoon_guest_reclaimed_bytes_total", reclaim="async") == 200 * BYTES_PER_MIB
    assert v("autoballoon_guest_major_faults_total") == 10
    assert v("autoballoon_guest_extended_stats") == 1
    assert v("autoballoon_guest_available_bytes") == 600 * BYTES_PER_MIB


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in doc["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_dashboard_is_valid_and_queries_only_metrics_we_expose(tmp_path: Path) -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["title"] == "autoballoon" and doc["uid"] and isinstance(doc["schemaVersion"], int)
    names = {v["name"] for v in doc["templating"]["list"]}
    assert {"datasource", "instance", "guest"} <= names
    ps = panels(doc)
    ids = [p["id"] for p in ps]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in ps:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(g["x"] + dx, g["y"] + dy) for dx in range(g["w"]) for dy in range(g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine

    exposed = {
        m.name + ("_total" if m.type == "counter" else "")
        for m in text_string_to_metric_families(scrape_extended(tmp_path))
    }
    titles = " ".join(p["title"].lower() for p in ps)
    for wanted in ("balloon size vs target", "class", "reclaimed", "decisions", "tick", "errors"):
        assert wanted in titles
    for p in ps:
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        for t in p["targets"]:
            for name in re.findall(r"\bautoballoon_[a-z0-9_]+", t["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in exposed or base in exposed, f"{p['title']}: {name} not exposed"
