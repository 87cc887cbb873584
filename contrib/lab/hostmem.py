"""The host's side of a guest's memory, and a steady host.

``qemu_pid``, ``qemu_rss_kib`` and ``guest_ram_rss_kib`` read what a guest's QEMU process holds
(VmRSS, and the RSS of the guest-RAM mapping alone, without QEMU's own heap and TCG
translation cache): what ballooning really returns to the host.

``SteadyHost`` holds anonymous memory so the host's MemAvailable stays where it was put.

On a shared host, other people's processes come and go and move MemAvailable by hundreds of
MiB within a minute; a controller in `on-demand` mode sees that as its shortfall changing under
it. ``SteadyHost`` holds memory in this process and adjusts the amount every half second so
MemAvailable stays at ``target_kib`` (within one chunk): when someone frees memory, it takes
it; when someone needs memory, it lets go of what it holds. Whatever ballooning gives back to
the host is taken too, which is the premise of the on-demand bound: a shortfall that does not
respond to inflation.

It never holds more than ``max_mib``; when it holds nothing and MemAvailable is still below the
target, it cannot help (``starved_s`` counts how long that lasted).
"""

from __future__ import annotations

import mmap
import threading
from pathlib import Path

from contrib.lab.policies import host_mem_available_kib

PAGE = mmap.PAGESIZE


def qemu_pid(name: str) -> int:
    """The QEMU process of a running libvirt domain (libvirt's pid file)."""
    return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())


def qemu_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def guest_ram_rss_kib(pid: int, mem_kib: int) -> int:
    """RSS of QEMU's guest-RAM mapping: the largest non-executable mapping at least the
    guest's size. (Under TCG the translation cache is an executable mapping of up to 1 GiB,
    larger than a small guest's RAM: it is not the guest's memory.)"""
    best_size, best_rss, size, executable = 0, 0, 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=2)
        if len(head) > 1 and "-" in head[0] and len(head[1]) == 4:  # a mapping's first line
            executable = "x" in head[1]
        elif line.startswith("Size:"):
            size = int(line.split()[1])
        elif (line.startswith("Rss:") and not executable and size >= mem_kib
              and size > best_size):
            best_size, best_rss = size, int(line.split()[1])
    return best_rss


class SteadyHost:
    def __init__(self, target_kib: int, chunk_mib: int = 16, max_mib: int = 4096,
                 period_s: float = 0.5, meminfo: Path = Path("/proc/meminfo")) -> None:
        self.target_kib = target_kib
        self.chunk_mib = chunk_mib
        self.max_chunks = max_mib // chunk_mib
        self.period_s = period_s
        self.meminfo = meminfo
        self.starved_s = 0.0
        self.peak_mib = 0
        self._chunks: list[mmap.mmap] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="steady-host", daemon=True)

    @property
    def held_mib(self) -> int:
        return len(self._chunks) * self.chunk_mib

    def hold_mib(self, mib: int) -> None:
        """Hold at least ``mib`` MiB now (touched, so it is really taken from the host)."""
        while self.held_mib < mib and len(self._chunks) < self.max_chunks:
            self._grow()

    def _grow(self) -> None:
        size = self.chunk_mib * 1024 * 1024
        chunk = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        view = memoryview(chunk)
        view[::PAGE] = b"\x01" * (size // PAGE)  # one write per page: resident, not just mapped
        view.release()
        self._chunks.append(chunk)
        self.peak_mib = max(self.peak_mib, self.held_mib)

    def adjust(self) -> None:
        """One step: grow or shrink by whole chunks towards the target (at most 8 per step)."""
        error_mib = (host_mem_available_kib(self.meminfo) - self.target_kib) / 1024
        steps = min(int(abs(error_mib) // self.chunk_mib), 8)
        if error_mib > 0:
            for _ in range(steps):
                if len(self._chunks) >= self.max_chunks:
                    break
                self._grow()
        else:
            for _ in range(steps):
                if not self._chunks:
                    self.starved_s += self.period_s
                    break
                self._chunks.pop().close()

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.adjust()

    def __enter__(self) -> SteadyHost:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        while self._chunks:
            self._chunks.pop().close()
