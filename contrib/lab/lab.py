"""The lab: tiny Linux 6.12 guests on real libvirt + QEMU with controlled memory behaviour.

Not part of the product package. Guests are named ``ab-lab-*``; the lab never touches
any other domain. See contrib/lab/README.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import libvirt
import libvirt_qemu

from autoballoon.core.samples import EXTENDED_STATS
from autoballoon.core.samples import U64_ABSENT as U64_ABSENT  # the lab's users import it here
from autoballoon.qmp import parse_balloon

LAB_DIR = Path(__file__).resolve().parent
CACHE_DIR = Path(os.environ.get("AB_LAB_CACHE", LAB_DIR / "cache"))
PREFIX = "ab-lab-"
DEFAULT_URI = os.environ.get("AB_LAB_URI", "qemu:///system")
NEW_STATS = EXTENDED_STATS
"""The 6.12 counters the lab's guests must report (the product's table)."""
REPORT_KEYS = (
    "up",
    "MemTotal",
    "MemAvailable",
    "MemFree",
    "Buffers",
    "Cached",
    "oom_kill",
    "allocstall",
    "pgscan_kswapd",
    "pgscan_direct",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "memload_restarts",
    "ws_mib",
)
TRUTH_KEYS = (
    "SwapTotal",
    "SwapFree",
    "pswpin",
    "pswpout",
    "psi_some_avg10",
    "psi_some_total",
    "psi_full_avg10",
    "psi_full_total",
    "pass_ms",
    "alloc_us_mib",
    "cache_read_ms",
)
"""What the guest itself lives through, from sources other than the balloon's counters: PSI
(``/proc/pressure/memory``; totals in microseconds), memload's time per pass over its working
set and its slowest allocation of the last second (us per MiB), the last page-cache re-read."""
CGROUP_KEYS = (
    "cg_current",
    "cg_max",
    "cg_high",
    "cg_oom",
    "cg_oom_kill",
    "cg_pgscan",
    "cg_pgsteal",
    "cg_psi_some_total",
    "cg_psi_full_total",
    "cg_ws_mib",
    "cg_restarts",
)
"""With a ``cgroup:`` workload: the cgroup's memory.events, memory.stat reclaim counters (pages),
memory.pressure totals (us), memory.current (kB) and its memload's working set and restarts."""
_REPORT_RE = re.compile(r"ABREPORT((?: [A-Za-z_][A-Za-z0-9_]*=[0-9.]+)+)")
PG_REPORT_KEYS = (
    "up", "t", "interval", "tx", "failed", "tps", "lat_avg_ms", "p50_ms", "p99_ms", "max_ms",
)
_PG_REPORT_RE = re.compile(r"PGREPORT((?: [A-Za-z_0-9]+=[0-9]+(?:\.[0-9]+)?)+)(?![0-9.])")
_PG_WORKLOAD_RE = re.compile(
    r"^(idle|warm:\d+(:[1-9]\d*)?|(warm:\d+(:[1-9]\d*)?\+)?pgbench:[1-9]\d*:[1-9]\d*)$")
GUEST_KINDS = ("busybox", "pg")
PG_TB_CACHE_MIB = 128
PG_DISK_DIR = CACHE_DIR / "pg" / "disks"
_WORKLOAD_RE = re.compile(
    r"^(idle|noballoon|cache:\d+|cold:\d+|steady:\d+|thrash:\d+|ramp:\d+:\d+:\d+"
    r"|spike:\d+:\d+:\d+(?::\d+)?|zram:\d+|cgroup:\d+:\d+)$"
)


class LabError(RuntimeError):
    """The lab could not do what was asked (daemon unreachable, guest did not boot...)."""


# --------------------------------------------------------------------------- image


def build_pg_image() -> Path:
    """Build (or reuse) the PostgreSQL guest (contrib/lab/pg/build.sh); returns the dir with
    rootfs.raw and initrd.img (the kernel is the busybox guests' ``vmlinuz``)."""
    return _run_build_script(LAB_DIR / "pg" / "build.sh", "pg/build.sh")


def _run_build_script(script: Path, what: str, quiet: bool = True) -> Path:
    proc = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, "AB_LAB_CACHE": str(CACHE_DIR)},
        check=False,
    )
    if proc.returncode != 0:
        raise LabError(f"{what} failed:\n{proc.stderr}")
    if not quiet and proc.stderr:
        print(proc.stderr, end="")
    return Path(proc.stdout.strip().splitlines()[-1])


def build_image(quiet: bool = True) -> Path:
    """Build (or reuse) the cached guest image; returns the cache dir with vmlinuz/initrd.img."""
    return _run_build_script(LAB_DIR / "build-image.sh", "build-image.sh", quiet)


# ---------------------------------------------------------------- virtualisation type

def _kvm_probe(timeout: float = 30.0) -> bool:
    """Boot the lab kernel + initramfs under ``-accel kvm`` with ab.workload=probe.

    True only if the guest prints "ABPROBE ok" (a /dev/kvm that exists but cannot
    run ordinary guest code, as in some nested set-ups, fails or pauses).
    """
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None or not os.path.exists("/dev/kvm"):
        return False
    image_dir = build_image()
    with tempfile.TemporaryFile() as out:
        cmd = [qemu, "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-m", "128",
               "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio",
               "-kernel", str(image_dir / "vmlinuz"), "-initrd", str(image_dir / "initrd.img"),
               "-append", "console=ttyS0 panic=-1 quiet ab.workload=probe"]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        ok = False
        try:
            while time.monotonic() < deadline:
                out.seek(0)
                text = out.read().decode(errors="replace")
                if "ABPROBE ok" in text:
                    ok = True
                    break
                if "KVM internal error" in text or proc.poll() is not None:
                    break
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        return ok


def detect_virt_type() -> str:
    """'kvm' if a KVM guest really runs here, else 'qemu' (TCG).

    AB_LAB_VIRT_TYPE=kvm|qemu overrides. Otherwise, if /dev/kvm exists, a lab
    guest is booted under ``-accel kvm``; the result is cached in cache/virt-type
    (delete it to probe again).
    """
    forced = os.environ.get("AB_LAB_VIRT_TYPE", "").strip()
    if forced:
        if forced not in ("kvm", "qemu"):
            raise LabError(f"AB_LAB_VIRT_TYPE must be kvm or qemu, not {forced!r}")
        return forced
    cached = CACHE_DIR / "virt-type"
    if cached.exists():
        value = cached.read_text().strip()
        if value in ("kvm", "qemu"):
            return value
    value = "kvm" if _kvm_probe() else "qemu"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    cached.write_text(value + "\n")
    return value


# --------------------------------------------------------------------------- guests


@dataclass(frozen=True)
class GuestSpec:
    """A lab guest: ``name`` (prefixed with ab-lab- if needed), memory in MiB, workload.

    workload: components joined by '+': idle, cache:MIB, cold:MIB, steady:MIB, thrash:MIB,
    ramp:FROM:TO:SECONDS, spike:BASE:PEAK:AT[:HOLD]; noballoon = do not load the
    guest's virtio_balloon driver (the guest never reports stats).

    kind: "busybox" (the initramfs guest above) or "pg": Debian 12 + PostgreSQL 15 on a
    disk (contrib/lab/pg/), workload ``idle``, ``pgbench:CLIENTS:SECONDS``, ``warm:MIB``
    (fill the page cache first: the database's files, then MIB MiB of the disk; with
    ``warm:MIB:SECONDS`` spread over that many seconds, as a cache that fills over days, and
    alongside pgbench) or both (``warm:MIB[:SECONDS]+pgbench:...``).

    The balloon device as an operator may have configured it: ``free_page_reporting``
    (``freePageReporting='on'``: pages the guest frees go back to the host) and
    ``autodeflate`` (deflate-on-OOM: the guest takes balloon pages back before its OOM killer
    runs). ``partition``: the libvirt resource partition (cgroup) the guest's QEMU runs in,
    e.g. ``/abdensity`` (it must exist in every cgroup controller), None for libvirt's default.
    """

    name: str
    mem_mib: int = 512
    workload: str = "idle"
    kind: str = "busybox"
    free_page_reporting: bool = False
    autodeflate: bool = False
    partition: str | None = None

    def __post_init__(self) -> None:
        if not 64 <= self.mem_mib <= 4096:
            raise ValueError(f"mem_mib {self.mem_mib} out of range (64..4096; lab uses 256..1024)")
        if self.kind not in GUEST_KINDS:
            raise ValueError(f"bad guest kind {self.kind!r} (one of {', '.join(GUEST_KINDS)})")
        if self.kind == "pg" and not _PG_WORKLOAD_RE.match(self.workload):
            raise ValueError(f"bad pg workload {self.workload!r} (idle, warm:MIB[:SECONDS], "
                             "[warm:MIB[:SECONDS]+]pgbench:CLIENTS:SECONDS)")
        if self.partition is not None and not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+",
                                                           self.partition):
            raise ValueError(f"bad resource partition {self.partition!r} (e.g. /abdensity)")
        for comp in self.workload.split("+") if self.kind == "busybox" else ():
            if not _WORKLOAD_RE.match(comp):
                raise ValueError(f"bad workload component {comp!r} in {self.workload!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError(f"bad guest name {self.name!r}")

    @property
    def domain_name(self) -> str:
        return self.name if self.name.startswith(PREFIX) else PREFIX + self.name

    @classmethod
    def parse(cls, text: str) -> GuestSpec:
        """'name:mem_mib:workload' (workload may itself contain ':')."""
        parts = text.split(":", 2)
        if len(parts) < 2:
            raise ValueError(f"expected name:mem_mib[:workload], got {text!r}")
        return cls(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "idle")


def parse_report(
    line: str, required: tuple[str, ...] = REPORT_KEYS + TRUTH_KEYS
) -> dict[str, float] | None:
    """Parse one ABREPORT line (may be preceded by other console output). ``required``: the
    keys a complete line has; the PostgreSQL guest's lines carry no busybox truth fields."""
    m = _REPORT_RE.search(line)
    if not m:
        return None
    out: dict[str, float] = {}
    for tok in m.group(1).split():
        key, _, val = tok.partition("=")
        try:
            out[key] = float(val) if key == "up" or "." in val else int(val)
        except ValueError:
            return None
    if any(k not in out for k in required):
        return None  # interleaved with kernel output; skip
    if any(k in out for k in CGROUP_KEYS) and any(k not in out for k in CGROUP_KEYS):
        return None
    return out


def parse_pg_report(line: str) -> dict[str, float] | None:
    """Parse one PGREPORT line of the PostgreSQL guest (pgbench's interval: tps, latency);
    None if there is none or it is incomplete (interleaved with kernel output)."""
    m = _PG_REPORT_RE.search(line)
    if not m:
        return None
    out = {key: float(val) for key, _, val in (t.partition("=") for t in m.group(1).split())}
    return out if all(k in out for k in PG_REPORT_KEYS) else None


def pg_domain_xml(spec: GuestSpec, virt_type: str, image_dir: Path, pg_dir: Path,
                  console: Path, disk: Path) -> str:
    """The PostgreSQL guest: the lab guest's domain with the pg initramfs, ``disk`` as
    /dev/vda (virtio, raw), ``ab.pg=`` on the command line and, under TCG, QEMU's
    translation-block cache capped (it counts in QEMU's RSS, up to about 1 GiB otherwise).
    No network device, like every lab guest."""
    root = ET.fromstring(domain_xml(spec, virt_type, image_dir, console))
    os_el = root.find("./os")
    assert os_el is not None
    initrd = os_el.find("./initrd")
    cmdline = os_el.find("./cmdline")
    assert initrd is not None and cmdline is not None
    initrd.text = str(pg_dir / "initrd.img")
    cmdline.text = f"console=ttyS0 panic=-1 quiet ab.pg={spec.workload}"
    if virt_type == "qemu":
        features = root.find("./features")
        assert features is not None
        tcg = ET.SubElement(features, "tcg")
        ET.SubElement(tcg, "tb-cache", unit="MiB").text = str(PG_TB_CACHE_MIB)
    devices = root.find("./devices")
    assert devices is not None
    disk_el = ET.Element("disk", type="file", device="disk")
    ET.SubElement(disk_el, "driver", name="qemu", type="raw", cache="none", io="native")
    ET.SubElement(disk_el, "source", file=str(disk))
    ET.SubElement(disk_el, "target", dev="vda", bus="virtio")
    devices.insert(0, disk_el)
    return ET.tostring(root, encoding="unicode")


def domain_xml(spec: GuestSpec, virt_type: str, image_dir: Path, console: Path) -> str:
    cmdline = f"console=ttyS0 panic=-1 quiet ab.workload={spec.workload}"
    cpu = "<cpu mode='host-passthrough'/>" if virt_type == "kvm" else ""
    balloon_opts = "".join(
        f" {attr}='on'"
        for attr, on in (("autodeflate", spec.autodeflate),
                         ("freePageReporting", spec.free_page_reporting))
        if on
    )
    resource = (f"<resource><partition>{escape(spec.partition)}</partition></resource>"
                if spec.partition else "")
    return f"""<domain type='{virt_type}'>
  <name>{escape(spec.domain_name)}</name>
  <memory unit='MiB'>{spec.mem_mib}</memory>
  <currentMemory unit='MiB'>{spec.mem_mib}</currentMemory>
  <vcpu>1</vcpu>
  {resource}
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{escape(str(image_dir / "vmlinuz"))}</kernel>
    <initrd>{escape(str(image_dir / "initrd.img"))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  {cpu}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <controller type='usb' model='none'/>
    <serial type='file'>
      <source path='{escape(str(console))}' append='off'/>
      <target port='0'/>
    </serial>
    <memballoon model='virtio'{balloon_opts}>
      <stats period='1'/>
    </memballoon>
  </devices>
</domain>
"""


CGROUP_ROOT = Path("/sys/fs/cgroup")


def ensure_partition(partition: str, root: Path = CGROUP_ROOT) -> Path:
    """Create libvirt resource partition ``partition`` (e.g. ``/abdensity``) where libvirt
    looks for it on a host without systemd: a ``NAME.partition`` directory in every mounted
    cgroup controller (v1 and the v2 ``unified`` mount), cpuset initialised from its parent.
    Returns its memory-controller directory (v1 ``memory/``, else the v2 one), which is where
    a limit on all of the partition's QEMU processes together goes."""
    rel = "/".join(part + ".partition" for part in partition.strip("/").split("/"))
    memory_dir: Path | None = None
    for ctrl in sorted(p for p in root.iterdir() if p.is_dir()):
        target = ctrl / rel
        if not (ctrl / "cgroup.procs").exists():
            continue
        parent = ctrl
        for part in rel.split("/"):
            child = parent / part
            child.mkdir(exist_ok=True)
            if (child / "cpuset.cpus").exists() and not (child / "cpuset.cpus").read_text().strip():
                (child / "cpuset.cpus").write_text((parent / "cpuset.cpus").read_text())
                (child / "cpuset.mems").write_text((parent / "cpuset.mems").read_text())
            parent = child
        if ctrl.name == "memory" or (memory_dir is None and (target / "memory.max").exists()):
            memory_dir = target
    if (root / "cgroup.procs").exists():  # a pure v2 host: one hierarchy at the root
        memory_dir = root / rel
        memory_dir.mkdir(parents=True, exist_ok=True)
    if memory_dir is None:
        raise RuntimeError(f"no memory cgroup controller under {root}")
    return memory_dir


class Guest:
    """A running lab guest (survives a libvirtd restart: the domain is looked up again)."""

    def __init__(self, spec: GuestSpec, dom: Any, console_path: Path,
                 lab: Lab | None = None) -> None:
        self.spec = spec
        self._dom = dom  # libvirt.virDomain
        self.console_path = console_path
        self._lab = lab
        self._alias: str | None = None

    def __repr__(self) -> str:
        return f"Guest({self.spec!r}, console={str(self.console_path)!r})"

    @property
    def dom(self) -> Any:
        """The libvirt.virDomain, re-looked-up if the lab had to reconnect."""
        if self._lab is not None and self._dom.connect() is not self._lab.conn:
            self._dom = self._lab.conn.lookupByName(self.spec.domain_name)
            self._alias = None
        return self._dom

    @property
    def name(self) -> str:
        return str(self.dom.name())

    # -- the guest's own truth (serial console)
    def console_reports(self) -> list[dict[str, float]]:
        """All ABREPORT lines so far, parsed (complete lines only)."""
        try:
            text = self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        lines = text.split("\n")[:-1]  # last element is an unfinished line
        required = REPORT_KEYS if self.spec.kind == "pg" else REPORT_KEYS + TRUTH_KEYS
        return [r for r in (parse_report(line, required) for line in lines) if r is not None]

    def latest_report(self) -> dict[str, float] | None:
        reports = self.console_reports()
        return reports[-1] if reports else None

    def pg_reports(self) -> list[dict[str, float]]:
        """All PGREPORT lines so far (the PostgreSQL guest's pgbench intervals), parsed."""
        lines = self.console_text().split("\n")[:-1]  # last element is an unfinished line
        return [r for r in map(parse_pg_report, lines) if r is not None]

    def pg_ready(self) -> bool:
        """The PostgreSQL guest said its database accepts connections."""
        return "PGEVENT ready" in self.console_text()

    def console_text(self) -> str:
        try:
            return self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- what the host sees through libvirt
    def balloon_alias(self) -> str:
        if self._alias is None:
            balloon = parse_balloon(self.dom.XMLDesc(0))
            if balloon is None or not balloon.alias:
                raise LabError(f"{self.name}: no memballoon alias in live XML (not running?)")
            self._alias = balloon.alias
        return str(self._alias)

    def qmp(self, execute: str, **arguments: Any) -> Any:
        cmd: dict[str, Any] = {"execute": execute}
        if arguments:
            cmd["arguments"] = arguments
        reply = json.loads(libvirt_qemu.qemuMonitorCommand(self.dom, json.dumps(cmd), 0))
        if "error" in reply:
            raise LabError(f"{self.name}: QMP {execute}: {reply['error']}")
        return reply["return"]

    def guest_stats(self) -> dict[str, Any]:
        """QEMU's guest-stats: {'last-update': epoch_s, 'stats': {'stat-...': n}}."""
        path = f"/machine/peripheral/{self.balloon_alias()}"
        result = self.qmp("qom-get", path=path, property="guest-stats")
        return dict(result)

    def memory_stats(self) -> dict[str, int]:
        """libvirt's memoryStats() (actual, rss, available... in KiB)."""
        return {str(k): int(v) for k, v in self.dom.memoryStats().items()}

    def balloon_actual_mib(self) -> float:
        return self.memory_stats()["actual"] / 1024

    def set_balloon_mib(self, mib: int) -> None:
        """Set the balloon target (the guest's memory) live, in MiB."""
        self.dom.setMemoryFlags(int(mib) * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def set_stats_period_s(self, seconds: int) -> None:
        """How often the guest reports balloon statistics, live (``virsh dommemstat --period``).

        The lab boots guests with a 1 s period; a cloud manager may set another one (OpenStack
        Nova sets 10 s), which a controller sees as reports that come less often.
        """
        self.dom.setMemoryStatsPeriod(int(seconds), libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def stats_period_s(self) -> int | None:
        """The stats period in the live XML (``<memballoon><stats period=.../>``), None if unset."""
        balloon = parse_balloon(self.dom.XMLDesc(0))
        return None if balloon is None else balloon.stats_period_s

    def is_running(self) -> bool:
        state, _ = self.dom.state()
        return bool(state == libvirt.VIR_DOMAIN_RUNNING)

    def wait_for(
        self,
        predicate: Callable[[Guest], bool],
        timeout: float = 60.0,
        interval: float = 0.5,
        what: str = "condition",
    ) -> None:
        """Poll predicate(self) until true; LabError (with the console tail) on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return
            if time.monotonic() > deadline:
                tail = "\n".join(self.console_text().splitlines()[-15:])
                raise LabError(f"{self.name}: timed out after {timeout:.0f}s waiting for {what}\n"
                               f"console tail:\n{tail}")
            time.sleep(interval)

    def is_ready(self) -> bool:
        if not self.is_running():
            state = self.dom.state()
            raise LabError(f"{self.name}: domain is not running (state {state}); "
                           "if it is paused, KVM may not work here: try AB_LAB_VIRT_TYPE=qemu")
        try:
            stats = self.guest_stats()
        except (libvirt.libvirtError, LabError):
            return False
        return bool(stats.get("last-update", 0) > 0) and self.latest_report() is not None


def _pg_guest_ready(guest: Guest) -> bool:
    return guest.is_ready() and guest.pg_ready()


class Lab:
    """Lab guests on one libvirt connection."""

    def __init__(self, uri: str = DEFAULT_URI, virt_type: str | None = None) -> None:
        self.uri = uri
        self._conn = self._open()
        self._virt_type = virt_type
        self.guests: dict[str, Guest] = {}
        self.console_dir = CACHE_DIR / "console"
        self.boot_seconds: dict[str, float] = {}

    def _open(self) -> Any:
        try:
            return libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise LabError(
                f"cannot connect to libvirt at {self.uri}: {exc}. "
                "Run `make setup` (or `bash contrib/lab/setup-host.sh`) as root first."
            ) from exc

    @property
    def conn(self) -> Any:
        """The libvirt connection; reopened if libvirtd went away in between."""
        try:
            alive = bool(self._conn.isAlive())
        except libvirt.libvirtError:
            alive = False
        if not alive:
            self._conn = self._open()
        return self._conn

    @conn.setter
    def conn(self, value: Any) -> None:
        self._conn = value

    @property
    def virt_type(self) -> str:
        if self._virt_type is None:
            self._virt_type = detect_virt_type()
        return self._virt_type

    def _lab_domains(self) -> list[Any]:
        return [d for d in self.conn.listAllDomains(0) if d.name().startswith(PREFIX)]

    def _remove(self, dom: Any) -> None:
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError:
            pass
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()
        (PG_DISK_DIR / f"{dom.name()}.raw").unlink(missing_ok=True)

    def _domain_xml(self, spec: GuestSpec, image_dir: Path, console: Path) -> str:
        """The domain for ``spec``; a PostgreSQL guest boots a fresh copy of the pristine
        disk image (a destroy is a power cut: nothing of a previous boot carries over)."""
        if spec.kind != "pg":
            return domain_xml(spec, self.virt_type, image_dir, console)
        pg_dir = build_pg_image()
        disk = PG_DISK_DIR / f"{spec.domain_name}.raw"
        disk.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "--sparse=always", str(pg_dir / "rootfs.raw"), str(disk)],
                       check=True)
        return pg_domain_xml(spec, self.virt_type, image_dir, pg_dir, console, disk)

    def up(self, specs: Sequence[GuestSpec], timeout: float = 180.0) -> list[Guest]:
        """Define and start guests, wait until each has balloon stats and an ABREPORT line."""
        names = [s.domain_name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate guest names: {names}")
        image_dir = build_image()
        self.console_dir.mkdir(parents=True, exist_ok=True)
        existing = {d.name(): d for d in self._lab_domains()}
        started: list[tuple[Guest, float]] = []
        for spec in specs:
            if spec.domain_name in existing:
                self._remove(existing[spec.domain_name])
            console = self.console_dir / f"{spec.domain_name}.log"
            console.unlink(missing_ok=True)
            if spec.partition:
                ensure_partition(spec.partition)
            xml = self._domain_xml(spec, image_dir, console)
            t0 = time.monotonic()
            dom = self.conn.defineXML(xml)
            try:
                dom.create()
            except libvirt.libvirtError:
                dom.undefine()
                raise
            guest = Guest(spec, dom, console, self)
            self.guests[spec.domain_name] = guest
            started.append((guest, t0))
        for guest, t0 in started:
            remaining = max(10.0, timeout - (time.monotonic() - t0))
            ready = Guest.is_ready if "noballoon" not in guest.spec.workload.split("+") else (
                lambda g: g.is_running() and g.latest_report() is not None)
            if guest.spec.kind == "pg":
                ready = _pg_guest_ready
            guest.wait_for(ready, timeout=remaining, what="balloon stats + first ABREPORT")
            self.boot_seconds[guest.name] = time.monotonic() - t0
        return [g for g, _ in started]

    def guest(self, name: str) -> Guest:
        key = name if name.startswith(PREFIX) else PREFIX + name
        if key not in self.guests:
            dom = self.conn.lookupByName(key)
            self.guests[key] = Guest(GuestSpec(key), dom, self.console_dir / f"{key}.log", self)
        return self.guests[key]

    def down(self, names: Iterable[str] | None = None) -> list[str]:
        """Destroy and undefine ab-lab-* domains (all of them by default, also stale ones)."""
        wanted = None if names is None else {
            n if n.startswith(PREFIX) else PREFIX + n for n in names
        }
        removed = []
        for dom in self._lab_domains():
            name = dom.name()
            if wanted is not None and name not in wanted:
                continue
            self._remove(dom)
            self.guests.pop(name, None)
            removed.append(name)
        return removed

    def status(self) -> list[dict[str, Any]]:
        """One dict per ab-lab-* domain: name, state, memory, balloon, latest report."""
        states = {
            libvirt.VIR_DOMAIN_RUNNING: "running",
            libvirt.VIR_DOMAIN_PAUSED: "paused",
            libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
            libvirt.VIR_DOMAIN_CRASHED: "crashed",
        }
        out = []
        for dom in self._lab_domains():
            state, _ = dom.state()
            info: dict[str, Any] = {"name": dom.name(), "state": states.get(state, str(state)),
                                    "max_mib": dom.maxMemory() // 1024}
            guest = self.guests.get(dom.name()) or Guest(
                GuestSpec(dom.name()), dom, self.console_dir / f"{dom.name()}.log", self
            )
            if state == libvirt.VIR_DOMAIN_RUNNING:
                try:
                    info["balloon_mib"] = guest.balloon_actual_mib()
                    info["rss_mib"] = guest.memory_stats().get("rss", 0) / 1024
                except libvirt.libvirtError:
                    pass
            info["report"] = guest.latest_report()
            out.append(info)
        return out

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
        self.close()
