"""QEMU's balloon protocol as autoballoon speaks it (autoballoon.qmp): text in, values out.

No QEMU here: the reply shapes are QEMU 10's (as read on the lab), and the malformed ones are
what a misbehaving monitor or guest could hand back.
"""

from __future__ import annotations

import json

import pytest

from autoballoon.qmp import (
    Balloon,
    guest_stats_command,
    parse_balloon,
    parse_guest_stats_reply,
    stats_from_libvirt_fields,
)

REPLY = {
    "return": {
        "last-update": 1795694239,
        "stats": {"stat-available-memory": 104857600, "stat-oom-kills": 1},
    }
}


def test_command_asks_the_balloon_for_its_guest_stats() -> None:
    assert json.loads(guest_stats_command("/machine/peripheral/balloon0")) == {
        "execute": "qom-get",
        "arguments": {"path": "/machine/peripheral/balloon0", "property": "guest-stats"},
    }


def test_reply_gives_last_update_and_stats() -> None:
    assert parse_guest_stats_reply(json.dumps(REPLY)) == (
        1795694239,
        {"stat-available-memory": 104857600, "stat-oom-kills": 1},
    )


@pytest.mark.parametrize(
    "reply",
    [
        "not json",
        "[]",
        json.dumps({"error": {"class": "GenericError", "desc": "no balloon"}}),
        json.dumps({"return": {"last-update": 5}}),
        json.dumps({"return": {"last-update": 5, "stats": []}}),
    ],
)
def test_a_reply_of_another_shape_is_no_reading(reply: str) -> None:
    assert parse_guest_stats_reply(reply) is None


@pytest.mark.parametrize("last_update", [True, "5", 1.5, None])
def test_a_last_update_that_is_not_an_integer_reads_as_never(last_update: object) -> None:
    reply = {"return": {"last-update": last_update, "stats": {}}}
    assert parse_guest_stats_reply(json.dumps(reply)) == (0, {})


def test_libvirt_names_become_qemus_and_kib_become_bytes() -> None:
    fields = {"balloon.usable": 1024, "balloon.major_fault": 7, "balloon.current": 2048}
    assert stats_from_libvirt_fields(fields) == {
        "stat-available-memory": 1024 * 1024,
        "stat-major-faults": 7,
    }


def test_balloon_without_alias_or_period() -> None:
    xml = "<domain><devices><memballoon model='virtio'/></devices></domain>"
    assert parse_balloon(xml) == Balloon("", None)
    assert Balloon("", None).qom_path == ""
    assert Balloon("balloon0", 5).qom_path == "/machine/peripheral/balloon0"
    assert parse_balloon("<domain><devices/></domain>") is None
