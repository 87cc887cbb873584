"""Every figure in README.md and docs/*.md has a source, and every test they name exists.

A figure is a number followed by a unit (MiB, %, ms, s, TPS, stalls, OOM kills...). Each one
must be either
- inside a generated block (``<!-- figures:NAME begin -->``: benchmarks/readme_figures.py), or
- in a paragraph that names a ``benchmarks/results/*.md`` file (or ``results/*.md``, or a bare
  ``NAME.md`` of that folder) that contains the number, or
- in a paragraph marked ``<!-- example: ... -->`` (output shown for its format, not a
  measurement; counted below so that the escape stays rare), or
- a setting: equal to a shipped default (``policies/default.toml``, the presets, the daemon's
  config), read from those files (``*_s`` as s, ``*_mib`` as MiB, ``*_ratio`` as %), or
- in ``ALLOWED``: the few other figures that are not measurements (a test's bound, a unit, an
  alert rule's window), each with its reason.
A list or a table takes the results files of the paragraph that leads into it too.
Code spans (`...`) are configuration, commands and field names, not figures. A fenced block
belongs to the paragraph before it. A paragraph is a run of non-blank lines.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from autoballoon.config import DaemonConfig

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

UNIT = (
    r"(?:MiB|GiB|KiB|MB|GB|%|ms|us|s|min|minutes|seconds|TPS|alloc stalls|stalls|"
    r"OOM kills?|kills)"
)
FIGURE = re.compile(r"(?<![\w.\-/+])(-?\d[\d,]*(?:\.\d+)?)\s?(" + UNIT + r")(?![\w])")
RESULTS_FILE = re.compile(r"(?:benchmarks/)?(?:results/)?([\w.-]+\.md)\b")
GENERATED = re.compile(r"<!-- figures:(\w+) begin.*?<!-- figures:\1 end[^\n]*-->", re.S)
EXAMPLE = "<!-- example:"
MAX_EXAMPLES = 10

# (file, figure as written): why it is no measurement.
ALLOWED: dict[tuple[str, str], str] = {
    ("README.md", "0.2 s"): "the reload test's bound, said as such",
    ("README.md", "3 minutes"): "how long `make demo` runs the daemon (contrib/demo.py)",
    ("docs/operations.md", "0.2 s"): "the reload test's bound",
    ("docs/operations.md", "30 s"): "how often the daemon re-reads a domain's XML (a constant)",
    ("docs/operations.md", "2 min"): "an alert rule's window (contrib/prometheus/)",
    ("docs/operations.md", "5 min"): "an alert rule's window (contrib/prometheus/)",
    ("docs/operations.md", "10 min"): "an alert rule's window (contrib/prometheus/)",
    ("docs/operations.md", "15 min"): "an alert rule's window (contrib/prometheus/)",
    ("docs/classification.md", "1 MiB"): "the balloon driver's unit of release on OOM",
    ("docs/classification.md", "120 s"): "the truth benchmark's run length, a setting",
    ("docs/classification.md", "95 %"): "the agreement target, not a result",
    ("docs/benchmarks.md", "0.4 s"): "how fast the lab's spike workload allocates, a setting",
    ("docs/trace-format.md", "1 MiB"): "the unit the format's fields are in",
    ("docs/trace-format.md", "16 MiB"): "an example value of a field",
    ("docs/trace-format.md", "1 OOM kill"): "an example value of a field",
}


def settings() -> set[str]:
    """Every shipped default, as a figure: what a doc may quote without a results file."""
    values: dict[str, object] = {k: f.default for k, f in DaemonConfig.model_fields.items()}
    for f in [REPO / "policies" / "default.toml", *(REPO / "policies" / "presets").glob("*.toml")]:
        for table in tomllib.loads(f.read_text(encoding="utf-8")).values():
            values |= {f"{k}@{f.name}": v for k, v in table.items()}
    out = set()
    for key, v in values.items():
        name = key.split("@")[0]
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if name.endswith("_s") and not name.endswith("_per_s"):
            out.add(f"{v:g} s")
        elif name.endswith(("_mib", "_mib_per_s")):
            out.add(f"{v:g} MiB")
        elif name.endswith("_ratio"):
            out.add(f"{round(v * 100, 6):g} %")
    return out


SETTINGS = settings()


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs; a fenced block joins the paragraph before it."""
    out: list[str] = []
    cur: list[str] = []
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
            cur.append(line)
            continue
        if not line.strip() and not fence:
            if cur:
                out.append("\n".join(cur))
            cur = []
            continue
        cur.append(line)
    if cur:
        out.append("\n".join(cur))
    # a fenced block after a blank line belongs to the paragraph before it
    joined: list[str] = []
    for p in out:
        if p.startswith("```") and joined:
            joined[-1] += "\n" + p
        else:
            joined.append(p)
    return joined


def figures(paragraph: str) -> list[str]:
    fenced = re.sub(r"```.*?```", lambda m: m.group().replace("`", ""), paragraph, flags=re.S)
    prose = re.sub(r"`[^`\n]*`", "", fenced)
    return [f"{m.group(1)} {m.group(2)}" for m in FIGURE.finditer(prose)]


def sources(paragraph: str) -> list[Path]:
    names = {m.group(1) for m in RESULTS_FILE.finditer(paragraph)}
    return [RESULTS / n for n in sorted(names) if (RESULTS / n).is_file()]


def plain(number: str) -> str:
    return number.replace(",", "").lstrip("-")


def unsourced(path: Path, text: str | None = None) -> list[str]:
    """The figures of ``path`` (or of ``text``, as if it were that file) that have no source."""
    rel = str(path.relative_to(REPO))
    if text is None:
        text = path.read_text(encoding="utf-8")
    text = GENERATED.sub("", text)
    bad = []
    lead: list[Path] = []
    for para in paragraphs(text):
        if EXAMPLE in para:
            continue
        files = sources(para)
        if para.lstrip().startswith(("- ", "|", "1. ")):
            files = sorted({*files, *lead})
        lead = files
        held = " ".join(f.read_text(encoding="utf-8") for f in files).replace(",", "")
        held_numbers = {float(x) for x in re.findall(r"\d+(?:\.\d+)?", held)}
        for fig in figures(para):
            number = float(plain(fig.split(" ")[0]))
            if (rel, fig) in ALLOWED or fig in SETTINGS or number in held_numbers:
                continue
            where = ", ".join(f.name for f in files) or "no results file named"
            first = para.strip().splitlines()[0][:70]
            bad.append(f"{rel}: {fig!r} ({where}) in the paragraph starting {first!r}")
    return bad


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_figure_has_a_results_file(path: Path) -> None:
    bad = unsourced(path)
    assert not bad, (
        "figures with no source: name the benchmarks/results/*.md file that holds each one in "
        "its paragraph, or drop it\n" + "\n".join(bad)
    )


def test_examples_stay_rare_and_allowed_figures_are_used() -> None:
    texts = {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in DOCS}
    assert sum(t.count(EXAMPLE) for t in texts.values()) <= MAX_EXAMPLES
    for (rel, fig), why in ALLOWED.items():
        assert why and fig in texts[rel].replace("`", ""), f"{rel}: {fig!r} no longer quoted"


def test_a_figure_without_a_source_is_caught() -> None:
    text = (
        "The demo held back 551 MiB.\n\nFrom `benchmarks/results/burst.md`: 4499 stalls.\n\n"
        "From `benchmarks/results/burst.md`: 4498 stalls.\n\n"
        "Settings are no figures: `stable_s` is 20 s by default.\n"
    )
    bad = unsourced(REPO / "docs" / "probe.md", text)
    assert len(bad) == 2 and "'551 MiB'" in bad[0] and "'4498 stalls'" in bad[1], bad


def test_every_named_test_exists() -> None:
    """Files under tests/ and test functions named in README.md and docs/*.md exist."""
    tests = REPO / "tests"
    defined = {
        m.group(1)
        for f in tests.rglob("*.py")
        for m in re.finditer(r"^\s*def (test_\w+)", f.read_text(encoding="utf-8"), re.M)
    }
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for f in set(re.findall(r"\btests/[\w/]+\.(?:py|sh)\b", text)):
            assert (REPO / f).is_file(), f"{path.name} names {f}, which does not exist"
        for name in set(re.findall(r"`(test_\w+)`", text)):
            assert name in defined, f"{path.name} names {name}, which no test defines"


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_links_within_the_docs_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        if file:
            assert (path.parent / file).exists(), f"{path.name}: link to missing {file}"
        elif anchor:
            assert anchor in anchors, f"{path.name}: no heading for #{anchor}"
