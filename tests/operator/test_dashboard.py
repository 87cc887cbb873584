"""The Grafana dashboard and the 6.12 counters it charts.

libvirt's test driver has no QEMU and so no 6.12 counters: here a small fake hypervisor
(``helpers.ExtendedGuestHypervisor``) reports a guest that has them, through the real observer
and controller, so every metric the dashboard queries can be checked against a real scrape.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from autoballoon.core.units import BYTES_PER_MIB

from .helpers import ROOT, scrape_extended

DASHBOARD = ROOT / "contrib" / "grafana" / "autoballoon.json"


def test_guest_counters_are_exposed_as_counters_in_base_units(tmp_path: Path) -> None:
    text = scrape_extended(tmp_path)
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }

    def v(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted({"domain": "vm-612", **labels}.items())))]

    assert "# TYPE autoballoon_guest_oom_kills_total counter" in text
    assert v("autoballoon_guest_oom_kills_total") == 1
    assert v("autoballoon_guest_alloc_stalls_total") == 20
    assert v("autoballoon_guest_scanned_bytes_total", reclaim="direct") == 40 * BYTES_PER_MIB
    assert v("autoballoon_guest_scanned_bytes_total", reclaim="async") == 300 * BYTES_PER_MIB
    assert v("autoballoon_guest_reclaimed_bytes_total", reclaim="direct") == 30 * BYTES_PER_MIB
    assert v("autoballoon_guest_reclaimed_bytes_total", reclaim="async") == 200 * BYTES_PER_MIB
    assert v("autoballoon_guest_major_faults_total") == 11
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
    assert {"datasource", "instance", "domain"} <= names
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

    exposed: dict[str, set[str]] = {}  # sample name -> its label names, plus Prometheus'
    for m in text_string_to_metric_families(scrape_extended(tmp_path)):
        for s in m.samples:
            exposed.setdefault(s.name, {"instance", "job"}).update(s.labels)
    titles = " ".join(p["title"].lower() for p in ps)
    for wanted in ("balloon size vs target", "class", "reclaimed", "decisions", "tick", "errors"):
        assert wanted in titles
    for p in ps:
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        for t in p["targets"]:
            for name in re.findall(r"\bautoballoon_[a-z0-9_]+", t["expr"]):
                assert name in exposed, f"{p['title']}: {name} not exposed"
            # Every label a selector filters on is one the series carries.
            for name, matchers in re.findall(r"\b(autoballoon_[a-z0-9_]+)\{([^}]*)\}", t["expr"]):
                for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                    assert label in exposed[name], f"{p['title']}: {name} has no label {label}"
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var.startswith("__") or var in names, f"{p['title']}: ${var} undefined"
