"""The shipped alerting rules (contrib/prometheus/): valid, able to fire, and about our metrics.

``promtool`` (Prometheus' own checker) validates the rules and runs their unit tests
(``autoballoon-rules.test.yml``: each alert fires on the series that should fire it). The lab
set-up puts it in ``contrib/lab/cache/bin`` (contrib/lab/setup-host.sh); without it those two
tests are skipped, and the others still check the rules against a real scrape.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoballoon.core.decide import RESCUE_CLASSES

from .helpers import ROOT, scrape_extended

RULES_DIR = ROOT / "contrib" / "prometheus"
RULES = RULES_DIR / "autoballoon-rules.yml"


def promtool() -> str:
    found = shutil.which("promtool") or ROOT / "contrib" / "lab" / "cache" / "bin" / "promtool"
    if not Path(found).is_file():
        pytest.skip("promtool not installed (contrib/lab/setup-host.sh installs it)")
    return str(found)


@pytest.mark.parametrize(
    "args",
    [("check", "rules", RULES.name), ("test", "rules", "autoballoon-rules.test.yml")],
    ids=["check", "unit-tests"],
)
def test_promtool_accepts_the_rules(args: tuple[str, ...]) -> None:
    done = subprocess.run(
        [promtool(), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rules_query_only_series_and_labels_we_expose(tmp_path: Path) -> None:
    labels: dict[str, set[str]] = {}  # sample name -> its labels, plus what Prometheus adds
    for family in text_string_to_metric_families(scrape_extended(tmp_path)):
        for s in family.samples:
            labels.setdefault(s.name, {"instance", "job"}).update(s.labels)
    exprs = re.findall(r"expr: (?:>-\n)?((?:.+\n)+?)\s+(?:for|labels):", RULES.read_text())
    assert len(exprs) == 8
    for expr in exprs:
        for name, matchers in re.findall(r"\b(autoballoon_[a-z0-9_]+)(?:\{([^}]*)\})?", expr):
            assert name in labels, f"{name} is not exposed"
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                assert label in labels[name], f"{name} has no label {label}"


def test_stuck_under_pressure_means_the_classes_the_controller_rescues() -> None:
    (classes,) = re.findall(
        r'autoballoon_guest_pressure_class\{class=~"([^"]+)"\}', RULES.read_text()
    )
    assert sorted(classes.split("|")) == sorted(str(c) for c in RESCUE_CLASSES)
