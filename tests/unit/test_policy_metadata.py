"""A domain's own libvirt <metadata> chooses its policy: autoballoon's <policy> element (a
per-VM file by name, field values) and OpenStack Nova's flavor name, which [match] flavors
matches. Precedence: default < name glob < flavor < the file the metadata names < exact
name/UUID < the metadata's own values. Checked on the parser, the resolver, the trace, and on
libvirt's test driver end to end (check-policy --uri, release)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from autoballoon.cli import main
from autoballoon.core.policy import AmbiguousPolicy, GuestPolicy, Match, PolicyLayer, PolicySet
from autoballoon.core.samples import NO_TAGS, DomainTags, GuestSample, HostSample
from autoballoon.policyfiles import OverlappingPolicies, load_policy_dir
from autoballoon.qmp import AUTOBALLOON_NS, tags_from_xml
from autoballoon.trace import parse_tick, tick_record

NOVA = "http://openstack.org/xmlns/libvirt/nova/1.1"


def domain_xml(metadata: str) -> str:
    return f"<domain type='kvm'><name>g</name><metadata>{metadata}</metadata></domain>"


@pytest.mark.parametrize(
    ("metadata", "tags"),
    [
        ("", NO_TAGS),
        (
            f"<nova:instance xmlns:nova='{NOVA}'><nova:flavor name='m1.large'>"
            "<nova:memory>2048</nova:memory></nova:flavor></nova:instance>",
            DomainTags(flavor="m1.large"),
        ),
        (
            f"<ab:policy xmlns:ab='{AUTOBALLOON_NS}' name='db' floor_mib='512' priority='80'/>",
            DomainTags("db", "", (("floor_mib", "512"), ("priority", "80"))),
        ),
        ("<x:policy xmlns:x='urn:someone-else' name='db'/>", NO_TAGS),
    ],
)
def test_the_metadata_is_read_from_the_domain_xml(metadata: str, tags: DomainTags) -> None:
    assert tags_from_xml(domain_xml(metadata)) == tags
    assert tags_from_xml("<domain><name>g</name></domain>") == NO_TAGS


def layer(source: str, **match: tuple[str, ...]) -> PolicyLayer:
    return PolicyLayer(source, Match(**match), {"priority": len(source)})


PSET = PolicySet(
    GuestPolicy(),
    layers=(
        layer("/p/web.toml", names=("web-*",)),  # priority 11
        layer("/p/large.toml", flavors=("m1.large",)),  # 13
        layer("/p/chosen-one.toml", names=("nobody",)),  # 18
        layer("/p/exact.toml", names=("web-1",)),  # 13 too: told apart by the sources
    ),
)


@pytest.mark.parametrize(
    ("name", "tags", "last_source"),
    [
        ("web-2", NO_TAGS, "/p/web.toml"),
        ("web-2", DomainTags(flavor="m1.large"), "/p/large.toml"),
        ("web-2", DomainTags(policy="chosen-one", flavor="m1.large"), "/p/chosen-one.toml"),
        ("web-1", DomainTags(policy="chosen-one"), "/p/exact.toml"),
        ("db-9", DomainTags(flavor="m1.small"), "(built-in defaults)"),
    ],
)
def test_precedence(name: str, tags: DomainTags, last_source: str) -> None:
    _policy, sources = PSET.resolve(name, "", tags)
    assert sources[-1] == last_source


def test_the_metadatas_own_values_come_last_and_are_validated() -> None:
    tags = DomainTags(overrides=(("floor_mib", "512"), ("priority", "80")))
    policy, sources = PSET.resolve("web-1", "", tags)
    assert (policy.floor_mib, policy.priority) == (512, 80)
    assert sources[-1] == "the domain's <autoballoon:policy> metadata"
    with pytest.raises(ValueError, match="floor_mib"):
        PSET.resolve("web-1", "", DomainTags(overrides=(("floor_mib", "lots"),)))


def test_metadata_naming_a_policy_file_that_does_not_exist_is_a_policy_error() -> None:
    with pytest.raises(AmbiguousPolicy, match="no per-VM file is called nope.toml"):
        PSET.resolve_cached("web-1", "", DomainTags(policy="nope"))


def test_two_files_matching_one_flavor_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("[match]\nflavors = ['m1.*']\n")
    (tmp_path / "b.toml").write_text("[match]\nflavors = ['*.large']\n")
    with pytest.raises(OverlappingPolicies, match="both match Nova flavor 'm1.large'"):
        load_policy_dir(tmp_path, strict_modes=False)
    (tmp_path / "b.toml").write_text("[match]\nnames = ['*.large']\n")  # a name glob: its own level
    assert len(load_policy_dir(tmp_path, strict_modes=False).layers) == 2


def test_a_trace_keeps_the_tags_for_replay() -> None:
    tags = DomainTags("db", "m1.large", (("floor_mib", "512"),))
    s = GuestSample("g", "u", 10.0, 1024, 2048, 0, tags=tags)
    host = HostSample(10.0, 8 << 20, 4 << 20)
    record = tick_record(10.0, host, {"g": s})
    tick, problems = parse_tick(record)
    assert problems == [] and tick.samples["g"].tags == tags
    plain = tick_record(10.0, host, {"g": GuestSample("g", "u", 10.0, 1024, 2048, 0)})
    assert "tags" not in plain["guests"]["g"]


# --- on libvirt's test driver -------------------------------------------------------------------
URI = "test:///default"


@pytest.fixture
def tagged() -> Iterator[libvirt.virDomain]:
    """The test domain, shrunk to 1 GiB, naming policy "optout" in its metadata (the test
    driver keeps it while this connection is open)."""
    conn = libvirt.open(URI)
    dom = conn.lookupByName("test")
    live = libvirt.VIR_DOMAIN_AFFECT_LIVE
    dom.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT, '<policy name="optout"/>', "ab", AUTOBALLOON_NS, live
    )
    dom.setMemory(1024 * 1024)
    yield dom
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, None, None, AUTOBALLOON_NS, live)
    dom.setMemory(2048 * 1024)
    conn.close()


def test_the_domain_chooses_its_policy_on_the_test_driver(
    tmp_path: Path, tagged: libvirt.virDomain, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "optout.toml").write_text(
        "[match]\nnames = ['nobody']\n[policy]\nenabled = false\n"
    )
    common = ["--policies", str(tmp_path), "--no-strict-modes", "--uri", URI]
    assert main(["check-policy", *common]) == 0
    assert "test  LEFT UNMANAGED: opted out (enabled = false)" in capsys.readouterr().out
    assert main(["release", "--all", *common, "--lock-file", str(tmp_path / "l")]) == 0
    assert tagged.info()[2] == 1024 * 1024, "the domain's own policy opts it out"
    assert "guest test left as it is, 1024 MiB (opted out" in capsys.readouterr().out


def test_explain_takes_the_flavor_and_the_metadata_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "large.toml").write_text("[match]\nflavors = ['m1.*']\n[policy]\npriority = 70\n")
    (tmp_path / "db.toml").write_text("[match]\nnames = ['nobody']\n[policy]\npriority = 90\n")
    args = ["check-policy", "--policies", str(tmp_path), "--no-strict-modes", "--explain", "g"]
    assert main([*args, "--flavor", "m1.large"]) == 0
    assert "priority = 70" in capsys.readouterr().out
    assert main([*args, "--flavor", "m1.large", "--metadata-policy", "db"]) == 0
    out = capsys.readouterr().out
    assert "priority = 90" in out and "large.toml < " in out and out.count("db.toml") >= 1
