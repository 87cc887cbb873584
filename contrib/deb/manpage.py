"""Write autoballoon(8), a man page, from the command line's own argparse help.

Packaging only (``make deb``): run with the Python that has autoballoon installed,
``python -m contrib.deb.manpage > autoballoon.8``. Every sub-command's ``--help`` text goes in
as it is, so the page never says anything the command line does not.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from importlib.metadata import metadata

from autoballoon import __version__
from autoballoon.cli import build_parser

FILES = """\
.TP
.I /etc/autoballoon/autoballoon.toml
The daemon's configuration ([daemon] section).
.TP
.I /etc/autoballoon/policies/
Policy files: default.toml, per-VM files, presets/ and examples/.
.TP
.I /run/autoballoon/status.json
The status file the daemon rewrites every tick; read by \\fBautoballoon status\\fR.
.TP
.I /usr/share/doc/autoballoon/
README.md, the operations and architecture guides, CHANGELOG.md.
.TP
.I /usr/share/autoballoon/
A Grafana dashboard and Prometheus alerting rules.
"""


def roff_text(text: str) -> str:
    """Plain text as roff lines: backslashes escaped, no line read as a request."""
    out = []
    for line in text.rstrip("\n").splitlines():
        line = line.replace("\\", "\\e")
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


def preformatted(text: str) -> str:
    return ".nf\n" + roff_text(text) + "\n.fi"


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def manpage(parser: argparse.ArgumentParser, date: datetime.date) -> str:
    summary = metadata("autoballoon")["Summary"]
    parts = [
        f'.TH AUTOBALLOON 8 "{date.isoformat()}" "autoballoon {__version__}" '
        '"System Administration"',
        ".SH NAME",
        "autoballoon \\- " + roff_text(summary),
        ".SH SYNOPSIS",
        preformatted(parser.format_usage().removeprefix("usage: ")),
        ".SH DESCRIPTION",
        roff_text((parser.description or "").strip()),
        ".SH COMMANDS",
    ]
    for name, sub in subcommands(parser).items():
        parts += [f".SS {name}", preformatted(sub.format_help())]
    parts += [
        ".SH FILES",
        FILES.rstrip("\n"),
        ".SH SEE ALSO",
        "\\fBsystemctl\\fR(1), \\fBvirsh\\fR(1)",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def main() -> None:
    os.environ["COLUMNS"] = "80"  # argparse wraps to the terminal: the page must not depend on it
    stamp = os.environ.get("SOURCE_DATE_EPOCH")
    date = (
        datetime.datetime.fromtimestamp(int(stamp), datetime.UTC).date()
        if stamp
        else datetime.date.today()
    )
    sys.stdout.write(manpage(build_parser(), date))


if __name__ == "__main__":
    main()
