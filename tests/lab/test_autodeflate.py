"""Deflate-on-OOM under the daemon: a guest that deflated itself is understood as such.

One busybox guest with ``<memballoon autodeflate='on'>``, 512 MiB, holding 96 MiB, that the
daemon (a real process, aggressive preset: proactive) inflates; at ``SPIKE_AT_S`` after boot its
working set jumps to 320 MiB for ``SPIKE_HOLD_S``, far over what it was left with. The guest's
balloon driver then gives pages back itself before its OOM killer runs. Asserted from the
daemon's JSON log: it named the rule ``self-deflated`` for the guest, and never inflated the
guest below the size it deflated itself to afterwards (the run is shorter than
``pressure_block_s``). And no OOM kill inside the guest (its own oom_kill counter): for a
global OOM the kernel calls the balloon's notifier first and kills nothing when it freed a page,
so while the balloon holds pages and the working set fits in the guest's maximum, deflate-on-OOM
leaves the killer nothing to do. Measured 0 in every run with it on (this test, and the spike
scenario in benchmarks/results/burst.md), against 2 and more without it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autoballoon.qmp import parse_balloon
from contrib.lab import GuestSpec, daemon_command, preset_policy_dir, run_daemon
from tests.lab.conftest import LabUp
from tests.lab.daemon_helpers import INTERVAL_S

pytestmark = pytest.mark.lab

NAME = "ab-lab-sd-spike"
SPIKE_AT_S, SPIKE_HOLD_S = 95, 30
RUN_S = SPIKE_AT_S + SPIKE_HOLD_S + 15  # from boot; the daemon starts once the guest reports
SPEC = GuestSpec(NAME, 512, f"idle+spike:96:320:{SPIKE_AT_S}:{SPIKE_HOLD_S}", autodeflate=True)


def test_a_guest_that_deflated_itself_is_not_inflated_back(
    lab_up: LabUp, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    t_boot = time.time()
    (guest,) = lab_up([SPEC])
    balloon = parse_balloon(guest.dom.XMLDesc(0))
    assert balloon is not None and balloon.autodeflate
    oom_before = int(guest.console_reports()[-1]["oom_kill"])
    cmd = daemon_command(
        NAME,
        preset_policy_dir(tmp_path),
        interval_s=INTERVAL_S,
        duration_s=max(RUN_S - (time.time() - t_boot), 60),
        log_format="json",
    )
    proc = run_daemon(cmd, capture_output=True, timeout=RUN_S + 120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    acts: list[dict[str, Any]] = [x for x in lines if x.get("guest") == NAME and x.get("action")]
    trail = [f"{x['ts'] - t_boot:.0f}s {x['action']} {x['from_kib'] // 1024}->"
             f"{x['to_kib'] // 1024} [{x['rule']}] {x['reason'][:90]}" for x in acts]
    reports = guest.console_reports()
    peak_ws = max(int(r["ws_mib"]) for r in reports)
    oom_kills = int(reports[-1]["oom_kill"]) - oom_before
    record_property("oom_kills", oom_kills)
    record_property("decisions", trail)
    print(f"guest OOM kills during the run: {oom_kills}; peak working set {peak_ws} MiB")
    print("\n".join(trail))

    assert peak_ws >= 300, f"the spike ran ({peak_ws} MiB)"
    assert oom_kills == 0, trail
    inflated = [x for x in acts if x["action"] == "inflate"]
    assert inflated, f"the daemon inflated the guest before the spike: {trail}"
    selfdef = [x for x in acts if x["rule"] == "self-deflated"]
    assert selfdef, f"the daemon saw the guest deflate itself: {trail}"
    first = selfdef[0]
    assert "deflate-on-OOM" in first["reason"]
    assert first["from_kib"] > min(x["to_kib"] for x in inflated), trail
    never_below = first["from_kib"]  # the size the guest deflated itself to (a hold: from=to)
    later = [x for x in acts if x["ts"] > first["ts"] and x["action"] == "inflate"]
    assert all(x["to_kib"] >= never_below for x in later), trail
