"""Taking autoballoon back out: `autoballoon release --all` on real guests.

Two lab guests are squeezed below their maximum, one of them opted out by its policy; `release
--all` gives the other its maximum back (read back through libvirt and in the guest's own
MemTotal) and leaves the opted-out one as it is, saying so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from contrib.lab import GuestSpec, autoballoon_command, run_daemon
from tests.lab.conftest import LabUp, wait_until

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
FREE, KEPT = "ab-lab-rel-free", "ab-lab-rel-kept"
MEM_MIB, SQUEEZED_MIB = 384, 256


def test_release_all_gives_every_managed_guest_its_maximum(
        lab_up: LabUp, tmp_path: Path) -> None:
    free, kept = lab_up([GuestSpec(FREE, MEM_MIB, "idle"), GuestSpec(KEPT, MEM_MIB, "idle")])
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies, ignore=shutil.ignore_patterns("presets",
                                                                               "examples"))
    (policies / "kept.toml").write_text(
        f'[match]\nnames = ["{KEPT}"]\n\n[policy]\nenabled = false\n')
    policies.chmod(0o755)
    for g in (free, kept):
        g.set_balloon_mib(SQUEEZED_MIB)
    for g in (free, kept):
        wait_until(lambda g=g: g.balloon_actual_mib() <= SQUEEZED_MIB + 1, 30,
                   f"{g.name} squeezed to {SQUEEZED_MIB} MiB")
    out = run_daemon(autoballoon_command("release", "--all", "--uri", "qemu:///system",
                                         "--policies", str(policies),
                                         "--lock-file", str(tmp_path / "lock")),
                     capture_output=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert f"guest {FREE} back to {MEM_MIB} MiB from {SQUEEZED_MIB} MiB" in text, text
    assert f"guest {KEPT} left as it is" in text and "opted out" in text, text
    wait_until(lambda: free.balloon_actual_mib() >= MEM_MIB - 1, 30,
               f"{FREE} back at {MEM_MIB} MiB")
    # the guest itself sees its memory again
    wait_until(lambda: (free.latest_report() or {}).get("MemTotal", 0) / 1024
               > SQUEEZED_MIB + 64, 30, f"{FREE}'s MemTotal back above {SQUEEZED_MIB} MiB")
    assert kept.balloon_actual_mib() <= SQUEEZED_MIB + 1, "the opted-out guest was resized"
