"""Parsers for the host's /proc memory files: text in, numbers out.

Below observe: ``autoballoon.observe`` opens the files (under a root it is given, so tests point
it at a fixture tree) and hands the text here. Nothing here opens a file, reads a clock or knows
about guests, so a backend that is not libvirt can reuse it as it is.
"""

from __future__ import annotations

from collections.abc import Mapping


def parse_meminfo(text: str) -> Mapping[str, int]:
    """/proc/meminfo as {field: kB}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0])
    return out


def parse_psi(text: str) -> tuple[float | None, float | None]:
    """/proc/pressure/memory -> (some avg10, full avg10)."""
    some = full = None
    for line in text.splitlines():
        kind, *fields = line.split()
        values = dict(f.split("=", 1) for f in fields if "=" in f)
        try:
            avg10 = float(values["avg10"])
        except (KeyError, ValueError):
            continue
        if kind == "some":
            some = avg10
        elif kind == "full":
            full = avg10
    return some, full
