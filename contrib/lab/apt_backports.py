"""Add bookworm-backports to apt, derived from the entry that describes plain ``bookworm``.

    python3 contrib/lab/apt_backports.py [APT_DIR]      (default /etc/apt)

Reads both apt source formats:
  - one-line entries in APT_DIR/sources.list and APT_DIR/sources.list.d/*.list
    (``deb [options] URI SUITE COMPONENT...``), as the Debian installer writes them;
  - deb822 stanzas in APT_DIR/sources.list.d/*.sources (``Types:``, ``URIs:``, ``Suites:``...),
    as newer cloud images write them.
The first enabled ``deb`` entry whose suites include ``bookworm`` is copied with only the suite
changed (same mirror, components, signed-by and other options) into
APT_DIR/sources.list.d/ab-lab-bookworm-backports.list (or .sources, the format of the entry it
came from). Nothing is written when an enabled bookworm-backports entry already exists.

Exit status: 0 nothing to do, 3 an entry was added (apt-get update is due), 1 no plain
bookworm entry to derive from. Says on stdout what it found and did. Standard library only:
it runs before any venv exists.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

SUITE = "bookworm"
BACKPORTS = "bookworm-backports"
OUT_NAME = "ab-lab-bookworm-backports"
EXIT_ADDED = 3


@dataclass
class Entry:
    """One apt source: a one-line ``deb`` line or one deb822 stanza."""

    path: Path
    deb822: bool
    types: list[str]
    suites: list[str]
    enabled: bool = True
    # One-line: the line's tokens; deb822: the stanza's (field, value) pairs in order.
    tokens: list[str] = field(default_factory=list)
    fields: list[tuple[str, str]] = field(default_factory=list)


def one_line_entries(path: Path) -> list[Entry]:
    entries = []
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        if re.match(r"^\S+\s+(\[[^\]]*\]\s+)?cdrom:", line):
            continue  # the installer's disc: no backports there (and its URI holds spaces)
        # Options may contain spaces only inside their brackets: keep "[...]" as one token.
        m = re.match(r"^(\S+)\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)(.*)$", line)
        if not m:
            continue
        kind, opts, uri, suite, rest = m.groups()
        tokens = [kind] + ([opts.strip()] if opts else []) + [uri, suite] + rest.split()
        entries.append(Entry(path, False, [kind], [suite], tokens=tokens))
    return entries


def deb822_entries(path: Path) -> list[Entry]:
    entries = []
    stanzas = re.split(r"\n[ \t]*\n", path.read_text(errors="replace"))
    for stanza in stanzas:
        fields: list[tuple[str, str]] = []
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and fields:  # continuation of a multi-line field
                name, value = fields[-1]
                fields[-1] = (name, value + "\n" + line)
                continue
            name, sep, value = line.partition(":")
            if sep:
                fields.append((name.strip(), value.strip()))
        if not fields:
            continue
        get = {name.lower(): value for name, value in fields}
        entries.append(
            Entry(
                path,
                True,
                get.get("types", "").split(),
                get.get("suites", "").split(),
                enabled=get.get("enabled", "yes").strip().lower() != "no",
                fields=fields,
            )
        )
    return entries


def read_sources(apt_dir: Path) -> list[Entry]:
    entries: list[Entry] = []
    main = apt_dir / "sources.list"
    if main.is_file():
        entries += one_line_entries(main)
    parts = apt_dir / "sources.list.d"
    for path in sorted(parts.glob("*.list")) if parts.is_dir() else []:
        entries += one_line_entries(path)
    for path in sorted(parts.glob("*.sources")) if parts.is_dir() else []:
        entries += deb822_entries(path)
    return entries


def backports_entry(source: Entry) -> tuple[str, str]:
    """The file name and text of a backports entry derived from a plain bookworm entry."""
    if source.deb822:
        lines = []
        for name, value in source.fields:
            if name.lower() == "types":
                value = "deb"
            elif name.lower() == "suites":
                value = BACKPORTS
            lines.append(f"{name}: {value}")
        return f"{OUT_NAME}.sources", "\n".join(lines) + "\n"
    tokens = list(source.tokens)
    suite_at = 3 if tokens[1].startswith("[") else 2
    tokens[suite_at] = BACKPORTS
    return f"{OUT_NAME}.list", " ".join(tokens) + "\n"


def main(argv: list[str]) -> int:
    apt_dir = Path(argv[1] if len(argv) > 1 else "/etc/apt")
    entries = [e for e in read_sources(apt_dir) if e.enabled and "deb" in e.types]
    have = [e for e in entries if BACKPORTS in e.suites]
    if have:
        print(f"{BACKPORTS} already in {have[0].path}")
        return 0
    plain = [e for e in entries if SUITE in e.suites]
    if not plain:
        print(
            f"no enabled 'deb' entry for suite '{SUITE}' in {apt_dir}/sources.list, "
            f"{apt_dir}/sources.list.d/*.list or *.sources; add {BACKPORTS} to apt by hand",
            file=sys.stderr,
        )
        return 1
    name, text = backports_entry(plain[0])
    out = apt_dir / "sources.list.d" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    kind = "deb822" if plain[0].deb822 else "one-line"
    print(f"added {BACKPORTS}: wrote {out}, derived from the {kind} entry in {plain[0].path}:")
    for line in text.splitlines():
        print(f"    {line}")
    return EXIT_ADDED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
