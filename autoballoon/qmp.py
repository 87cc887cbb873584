"""The QEMU and domain-XML text, in one place: QMP commands and replies, the domain XML's balloon
(``parse_balloon``) and policy metadata (``tags_from_xml``), libvirt's balloon field names.

Below observe and beside the backends: ``autoballoon.backends.libvirt`` sends these commands
through ``qemuMonitorCommand``; a backend that talks to QEMU's monitor socket directly would send
the same text. Nothing here imports libvirt or does I/O: text in, values out. Statistics leave in
QEMU's guest-stats names and units (bytes for amounts), whichever route they came by.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autoballoon.core.samples import NO_TAGS, DomainTags

# libvirt's bulk balloon.* fields -> QEMU guest-stats names, with the factor to bytes
# (libvirt speaks KiB for amounts; fault counts are counts).
LIBVIRT_TO_QEMU = {
    "balloon.swap_in": ("stat-swap-in", 1024),
    "balloon.swap_out": ("stat-swap-out", 1024),
    "balloon.major_fault": ("stat-major-faults", 1),
    "balloon.minor_fault": ("stat-minor-faults", 1),
    "balloon.unused": ("stat-free-memory", 1024),
    "balloon.available": ("stat-total-memory", 1024),
    "balloon.usable": ("stat-available-memory", 1024),
    "balloon.disk_caches": ("stat-disk-caches", 1024),
    "balloon.hugetlb_pgalloc": ("stat-htlb-pgalloc", 1),
    "balloon.hugetlb_pgfail": ("stat-htlb-pgfail", 1),
}


def stats_from_libvirt_fields(fields: Mapping[str, Any]) -> dict[str, object]:
    """libvirt's balloon.* fields renamed to QEMU's guest-stats names, amounts in bytes."""
    return {
        qemu_name: int(fields[key]) * factor
        for key, (qemu_name, factor) in LIBVIRT_TO_QEMU.items()
        if key in fields
    }


@dataclass(frozen=True, slots=True)
class Balloon:
    """A domain's balloon device as its XML describes it (``<devices><memballoon>``)."""

    alias: str
    """The device's alias (``<alias name='balloon0'/>``, live XML only); "" without one."""
    stats_period_s: int | None
    """``<stats period='N'/>`` in seconds; None when absent or not a number."""
    autodeflate: bool = False
    """Deflate-on-OOM (``autodeflate='on'``); absent or "off" read as off."""
    free_page_reporting: bool = False
    """Free page reporting (``freePageReporting='on'``); absent or "off" read as off."""

    @property
    def qom_path(self) -> str:
        """The device's QOM path for QMP; "" without an alias (QMP unusable, libvirt still
        reads the balloon)."""
        return f"/machine/peripheral/{self.alias}" if self.alias else ""


def parse_balloon(xml: str) -> Balloon | None:
    """The balloon device of a domain's XML; None when it has none (or ``model='none'``).

    The one place the domain XML's ``<memballoon>`` is read (its alias, statistics period,
    ``autodeflate`` and ``freePageReporting``). XML that does not parse raises
    ``xml.etree.ElementTree.ParseError``.
    """
    balloon = ET.fromstring(xml).find("./devices/memballoon")
    if balloon is None or balloon.get("model") in (None, "none"):
        return None
    alias = balloon.find("./alias")
    stats = balloon.find("./stats")
    period = stats.get("period") if stats is not None else None
    return Balloon(
        alias=(alias.get("name") or "") if alias is not None else "",
        stats_period_s=int(period) if period and period.isdigit() else None,
        autodeflate=balloon.get("autodeflate") == "on",
        free_page_reporting=balloon.get("freePageReporting") == "on",
    )


TAINT_NOTE = """\
extended_stats = "qmp" (the default) reads each guest's Linux 6.12 balloon counters
(stat-oom-kills, stat-alloc-stalls, stat-async-scans, stat-direct-scans, stat-async-reclaims,
stat-direct-reclaims) with `qom-get <balloon>/guest-stats` sent through libvirt's QMP
passthrough (virDomainQemuMonitorCommand). libvirt marks every domain sent such a command
"tainted: custom-monitor" in its log (/var/log/libvirt/qemu/GUEST.log), in dry-run too, as
reading needs it. libvirt's own balloon statistics (virDomainMemoryStats) end at
hugetlb_pgfail, with no tag for these counters (docs/operations.md names the libvirt sources
read), so there is no other route through libvirt.
To avoid the taint: extended_stats = "off" (libvirt's standard statistics only).
What that costs (benchmarks/results/lab.md, aggressive preset, real 6.12 guests): the guest
whose need jumped far over its headroom (spike-large) had 22 OOM kills and 870 allocation
stalls with "off", 2 and 140 with "qmp"; a thrashing guest (thrash-t512), 1424 stalls with
"off", 22 with "qmp"."""
"""Why domains are tainted custom-monitor, how to avoid it and its cost (check-policy --uri)."""


AUTOBALLOON_NS = "urn:x-autoballoon:policy:1"
"""Namespace of the ``<policy>`` element a domain's ``<metadata>`` may carry for autoballoon:
``<ab:policy xmlns:ab="urn:x-autoballoon:policy:1" name="db" floor_mib="512" priority="80"/>``
(``virsh metadata GUEST urn:x-autoballoon:policy:1 --key ab --set '<policy name="db"/>'``)."""
NOVA_NS_PREFIX = "http://openstack.org/xmlns/libvirt/nova/"
"""OpenStack Nova's metadata namespaces (1.0, 1.1, 1.2...): ``<nova:flavor name="m1.large">``."""


def tags_from_xml(xml: str) -> DomainTags:
    """What a domain's ``<metadata>`` says about its policy: autoballoon's own element (the
    policy file it asks for, field values) and Nova's flavor name. Nothing there: ``NO_TAGS``."""
    metadata = ET.fromstring(xml).find("./metadata")
    if metadata is None:
        return NO_TAGS
    policy, flavor = "", ""
    overrides: tuple[tuple[str, str], ...] = ()
    for el in metadata.iter():
        ns, _, local = el.tag[1:].partition("}") if el.tag.startswith("{") else ("", "", el.tag)
        if ns == AUTOBALLOON_NS and local == "policy":
            policy = el.get("name", "")
            overrides = tuple(sorted((k, v) for k, v in el.attrib.items() if k != "name"))
        elif ns.startswith(NOVA_NS_PREFIX) and local == "flavor" and not flavor:
            flavor = el.get("name", "")
    return DomainTags(policy, flavor, overrides)


def guest_stats_command(balloon_path: str) -> str:
    """The QMP command that reads the balloon's guest-stats (all of them, 6.12 counters too)."""
    return json.dumps(
        {"execute": "qom-get", "arguments": {"path": balloon_path, "property": "guest-stats"}}
    )


def parse_guest_stats_reply(reply: str) -> tuple[int, dict[str, object]] | None:
    """(last-update in epoch s, stats) from the reply to ``guest_stats_command``.

    None when the reply is not JSON or not the expected shape. A last-update that is not an
    integer reads as 0 (never reported), which the core treats as no fresh report.
    """
    try:
        doc = json.loads(reply)
    except ValueError:
        return None
    ret = doc.get("return") if isinstance(doc, dict) else None
    if not isinstance(ret, dict) or not isinstance(ret.get("stats"), dict):
        return None
    last_update = ret.get("last-update", 0)
    if not isinstance(last_update, int) or isinstance(last_update, bool):
        last_update = 0
    return last_update, dict(ret["stats"])
