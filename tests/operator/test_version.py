"""The version: one string, from the installed distribution, shown by `--version`."""

from __future__ import annotations

import re
from importlib.metadata import version

from autoballoon import __version__

from .helpers import autoballoon


def test_version_is_the_distributions_and_cli_prints_it() -> None:
    assert __version__ == version("autoballoon")
    # PEP 440, from a git tag or the fallback in pyproject.toml: never the old fixed 0.1.0
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+)?(\+[a-z0-9.]+)?", __version__), __version__
    assert __version__ != "0.1.0"
    done = autoballoon("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"autoballoon {__version__}"
