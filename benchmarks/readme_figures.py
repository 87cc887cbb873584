"""The README's benchmark tables, generated from benchmarks/results/*.md.

    python -m benchmarks.readme_figures            # print the generated blocks
    python -m benchmarks.readme_figures --write    # rewrite them in README.md (after `make bench`)

Each table sits in README.md between ``<!-- figures:NAME begin -->`` and
``<!-- figures:NAME end -->``. Every figure in them is read from a results file, so the README
cannot quote an older run than the files hold; tests/docs/test_readme_figures.py fails when they
differ. A results file missing a figure is an error naming the file and what is missing.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"

Row = dict[str, str]


class FiguresError(ValueError):
    """A results file lacks a figure the README quotes."""


def tables(text: str) -> list[list[Row]]:
    """Every Markdown table in ``text``: rows as {header: cell}, separator row dropped."""
    out: list[list[Row]] = []
    block: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if len(block) > 2:
            head = block[0]
            out.append([dict(zip(head, cells, strict=False)) for cells in block[2:]])
        block = []
    return out


def table_with(text: str, column: str, where: str) -> list[Row]:
    for t in tables(text):
        if t and column in t[0]:
            return t
    raise FiguresError(f"{where}: no table with a column {column!r}")


def row_where(rows: list[Row], column: str, test: Callable[[str], bool], where: str) -> Row:
    for r in rows:
        if test(r.get(column, "")):
            return r
    raise FiguresError(f"{where}: no row in column {column!r} as expected")


def find(pattern: str, text: str, where: str) -> re.Match[str]:
    m = re.search(pattern, text)
    if m is None:
        raise FiguresError(f"{where}: no match for {pattern!r}")
    return m


def num(cell: str) -> float:
    m = re.search(r"-?[\d,]*\.?\d+", cell)
    if m is None:
        raise FiguresError(f"not a number: {cell!r}")
    return float(m.group().replace(",", ""))


def read(results: Path, name: str) -> tuple[str, str]:
    path = results / name
    if not path.is_file():
        raise FiguresError(f"{path} missing: run `make bench`")
    return path.read_text(), f"results/{name}"


def core_row(results: Path) -> str:
    text, f = read(results, "core.md")
    rows = table_with(text, "per tick (ms)", f)
    k1 = row_where(rows, "guests", lambda c: c == "1000", f)
    k5 = row_where(rows, "guests", lambda c: c == "5000", f)
    per_tick = num(k1["per tick (ms)"])
    met = "met" if per_tick < 20 else "**not met yet**"
    return (
        f"| core: classify + decide, 1,000 guests | {k1['per tick (ms)']} ms CPU per tick "
        f"({k1['per guest (us)']} us per guest; 5,000 guests: {k5['per tick (ms)']} ms) "
        f"| < 20 ms: {met} | `{f}` |"
    )


def replay_row(results: Path) -> str:
    text, f = read(results, "replay.md")
    r = table_with(text, "wall s", f)[0]
    hours = num(r["ticks (1 s)"]) / 3600
    met = "met" if num(r["wall s"]) < 60 else "**not met**"
    return (
        f"| replay: {hours:g} hour of {r['guests']} guests at 1 s ticks ({r['trace MiB']} MiB "
        f"trace) | {r['wall s']} s wall, peak RSS {r['peak RSS MiB']} MiB | < 60 s: {met} "
        f"| `{f}` |"
    )


def adapter_rows(results: Path) -> list[str]:
    text, f = read(results, "adapter.md")
    parts = table_with(text, "extended_stats=off", f)
    bulk = row_where(parts, "part of one tick", lambda c: c.startswith("observe: bulk"), f)
    bulk_m = find(r"(\d+) x ([\d.]+) ms \+ adapter \d+ x ([\d.]+) ms", bulk["part of one tick"], f)
    qmp = row_where(parts, "part of one tick", lambda c: c.startswith("observe: QMP"), f)
    qmp_ms = find(r"x ([\d.]+) ms", qmp["part of one tick"], f).group(1)
    tick = row_where(parts, "part of one tick", lambda c: c == "**tick**", f)
    off_ms, qmp_ms_tick = (tick[k].strip("*") for k in ("extended_stats=off", "extended_stats=qmp"))
    n = bulk_m.group(1)
    slow = find(
        r"--interval ([\d.]+)` against one lab guest for (\d+) s, with "
        r"`LibvirtHypervisor.read\(\)` slowed by ([\d.]+) s(?s:.*?): (\d+) ticks completed, "
        r"(\d+) late ticks dropped and counted.*?at most (\d+) tick running",
        text,
        f,
    )
    return [
        f"| adapter: bulk read + QMP per guest | {bulk_m.group(2)} ms bulk + {bulk_m.group(3)} ms "
        f"adapter per guest, QMP {qmp_ms} ms more; {n} guests: a {off_ms} tick with "
        f'`extended_stats = "off"`, {qmp_ms_tick} with `qmp` (extrapolated) '
        f"| fits a 5 s interval: {'met' if num(qmp_ms_tick) < 5000 else '**not met**'} "
        f"| `{f}` |",
        f"| slow ticks | a {slow.group(3)} s tick at a {slow.group(1)} s interval for "
        f"{slow.group(2)} s: {slow.group(4)} ticks run, {slow.group(5)} late ticks dropped and "
        f"counted, at most {slow.group(6)} running | no pile-up | `{f}` |",
    ]


def footprint_row(results: Path) -> str:
    text, f = read(results, "footprint.md")
    rows = table_with(text, "measure", f)

    def val(prefix: str) -> str:
        return row_where(rows, "measure", lambda c: c.startswith(prefix), f)["value"]

    guests = find(r"managing (\d+) lab guests", text, f).group(1)
    minutes = num(val("run length"))
    interval = find(r"ticks \(interval ([\d.]+) s\)", "\n".join(r["measure"] for r in rows), f)
    return (
        f"| daemon footprint, {guests} guests, {minutes:g} min at {interval.group(1)} s ticks "
        f"| RSS {num(val('resident memory (VmRSS) after the first tick')):g} -> "
        f"{num(val('resident memory at the end')):g} MiB, "
        f"{num(val('CPU share after start-up')):g} % of a core after start-up, "
        f"{num(val('CPU per tick')):g} ms CPU per tick | small | `{f}` |"
    )


def soak_row(results: Path) -> str:
    text, f = read(results, "soak.md")
    title = find(r"# Soak: (\d+) minutes, (\d+) lab guests", text, f)
    guests = table_with(text, "OOM kills", f)
    oom = sum(int(num(r["OOM kills"])) for r in guests)
    stalls = sum(int(num(r["alloc stalls"])) for r in guests)
    workloads = ", ".join(r["guest"].removeprefix("ab-lab-s-") for r in guests)
    changes = find(r"balloon changes made: (\d+)", text, f).group(1)
    errors = find(r"warnings/errors not accounted for: (\d+)", text, f).group(1)
    rss = find(r"daemon RSS: start ([\d.]+) MiB, end ([\d.]+) MiB.*?CPU ([\d.]+)%", text, f)
    verdict = find(r"Verdict: (\w+)", text, f).group(1)
    return (
        f"| soak: {title.group(1)} min, {title.group(2)} guests ({workloads}) | {changes} changes, "
        f"{errors} unaccounted errors, {oom} OOM kills, {stalls} stalls; daemon RSS "
        f"{rss.group(1)} -> {rss.group(2)} MiB, {rss.group(3)} % of a core | bounded: {verdict} "
        f"| `{f}` |"
    )


def figures_table(results: Path = RESULTS) -> str:
    machine = find(r"Machine: ([^\n]+?)\. Date: (\S+)", read(results, "core.md")[0],
                   "results/core.md")  # fmt: skip
    lines = [
        f"Machine: {machine.group(1)}; {machine.group(2)}.",
        "Guests run under TCG (no usable KVM) and share the two cores with everything else.",
        "",
        "| what | figure | target | file |",
        "|---|---|---|---|",
        core_row(results),
        replay_row(results),
        *adapter_rows(results),
        footprint_row(results),
        soak_row(results),
    ]
    return "\n".join(lines)


SCENARIOS = {
    "mixed": "mixed (idle, steady, ramp, cache)",
    "spike": "spike (+40 MiB, +224 MiB, idle bystander)",
    "thrash": "thrash-prone (working set near the size)",
}


def lab_table(results: Path = RESULTS) -> str:
    text, f = read(results, "lab.md")
    total = find(r"total wall time ([\d.]+) min", read(results, "index.md")[0], "results/index.md")
    lines = [
        f"The full run took {total.group(1)} minutes (`results/index.md`).",
        "Sums are over each scenario's guests, for the converged second half of the run:",
        "",
        "| scenario | mode | reclaimed MiB | OOM kills | alloc stalls "
        "| thrashing / global-reclaim |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, label in SCENARIOS.items():
        section = find(rf"(?s)## Scenario `{name}`.*?(?=\n## |\Z)", text, f).group()
        where = f"{f} scenario {name}"
        per_guest = table_with(section, "stalls", where)
        summary = table_with(section, "OOM kills", where)
        for mode in ("off", "qmp"):
            s = row_where(summary, "mode", lambda c, m=mode: c == m, where)
            reclaimed = s["reclaimed MiB, sum (all / 2nd half)"].split("/")[1].strip()
            rows = [r for r in per_guest if r["mode"] == mode]
            stalls = sum(int(num(r["stalls"])) for r in rows)
            thrash = sum(int(num(r["thrash s (guest / ctl)"].split("/")[0])) for r in rows)
            first = f" {label} " if mode == "off" else " "
            lines.append(
                f"|{first}| `{mode}` | {reclaimed} | {s['OOM kills']} | {stalls} | {thrash} s |"
            )
    return "\n".join(lines)


KNEE_COLUMN = "of the knee's memory"


def pg_table(results: Path = RESULTS) -> str:
    """The real-guest table: the twins' noise floor, the frontier's knee, a row per mode of
    results/pg.md (medians over pairs, each a ratio to an untouched twin)."""
    text, f = read(results, "pg.md")
    machine = find(r"Machine: ([^\n]+?)\. Date: (\S+)", text, f)
    floor = find(r"\*\*(Noise floor[^*]+)\*\*", text, f)
    knee = find(r"The yardstick is the fixed-size frontier's knee \(`frontier.md`\): ([^\n]+)",
                text, f)
    rows = table_with(text, "verdict", f)
    lines = [
        f"Machine: {machine.group(1)}; {machine.group(2)}. Two identical warm 1 GiB PostgreSQL "
        f"guests per pair, `pgbench -c 4` in both over the same seconds, one under the mode, "
        f"one untouched (`{f}`, `results/frontier.md`, `results/frontier.png`). "
        f"{floor.group(1)} The knee of the fixed-size frontier: {knee.group(1)}",
        "",
        "| mode | pairs | host got back MiB | of cache + free | TPS ratio to twin "
        "| p99 ratio to twin | OOM kills | of the knee's memory | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arm']} | {r['pairs']} | {r['host got back MiB']} | {r['of cache + free']} "
            f"| {r['TPS ratio']} | {r['p99 ratio']} | {r['OOM kills']} "
            f"| {r[KNEE_COLUMN]} | {r['verdict']} |"
        )
    lines += ["", "Cells: median [min, max] over pairs."]
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[Path], str]] = {
    "bench": figures_table, "pg": pg_table, "lab": lab_table,
}


def marker(name: str, end: bool) -> str:
    where = "end" if end else "begin"
    return f"<!-- figures:{name} {where} (python -m benchmarks.readme_figures --write) -->"


def _block_re(name: str) -> re.Pattern[str]:
    begin, end = re.escape(marker(name, False)), re.escape(marker(name, True))
    return re.compile(begin + r"\n(?:(.*?)\n)?" + end, re.S)


def block_in(readme: str, name: str) -> str | None:
    """The text between a block's markers ('' when empty), or None without the markers."""
    m = _block_re(name).search(readme)
    return None if m is None else m.group(1) or ""


def rewrite(readme: str, results: Path = RESULTS) -> str:
    for name, make in BLOCKS.items():
        if block_in(readme, name) is None:
            raise FiguresError(f"README.md has no {marker(name, False)!r} ... block")
        text = f"{marker(name, False)}\n{make(results)}\n{marker(name, True)}"
        readme = _block_re(name).sub(lambda _m, t=text: t, readme)
    return readme


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--write", action="store_true", help="rewrite the blocks in README.md")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    try:
        if args.write:
            README.write_text(rewrite(README.read_text(), args.results))
            print(f"rewrote the benchmark figures in {README}")
        else:
            for name, make in BLOCKS.items():
                print(f"{marker(name, False)}\n{make(args.results)}\n{marker(name, True)}\n")
    except FiguresError as err:
        print(f"readme_figures: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
