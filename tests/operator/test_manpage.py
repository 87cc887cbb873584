"""autoballoon(8), as `make deb` generates it from the command line's help."""

from __future__ import annotations

import datetime
import shutil
import subprocess

import pytest

from autoballoon.cli import build_parser
from contrib.deb.manpage import manpage, subcommands


def test_the_page_has_every_command_and_no_stray_requests() -> None:
    parser = build_parser()
    page = manpage(parser, datetime.date(2026, 12, 5))
    assert page.startswith('.TH AUTOBALLOON 8 "2026-12-05"')
    names = list(subcommands(parser))
    assert {"run", "status", "check-policy", "replay"} <= set(names)
    for name in names:
        assert f"\n.SS {name}\n" in page
    known = (".TH", ".SH", ".SS", ".TP", ".I ", ".nf", ".fi")
    requests = [line for line in page.splitlines() if line.startswith((".", "'"))]
    assert all(line.startswith(known) for line in requests), requests


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_groff_renders_it_without_warnings() -> None:
    page = manpage(build_parser(), datetime.date(2026, 12, 5))
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z"], input=page, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
