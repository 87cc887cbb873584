"""`autoballoon replay`: what a policy would have done on a recorded trace, offline.

Reads a trace (``autoballoon.trace``), runs it through the production engine
(``autoballoon.replay``): under the policies the trace records, as the daemon ran, or under
others (``--policies``, ``--compare``) in open loop; and reports: a per-guest table, one JSON
line per guest per tick, two policy sets side by side, or a plot. Output depends only on the
trace, the policies and the arguments: no clock, no hypervisor.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from autoballoon import plot
from autoballoon.core.decide import Decision
from autoballoon.policyfiles import PolicyFileError, load_policy_dir
from autoballoon.replay import ACTIONS, Replayer, decision_record
from autoballoon.trace import TraceError, TraceReader, recorded_run

RECORDED = "(recorded in the trace)"

DESCRIPTION = """\
Feed a recorded trace (`autoballoon run --record FILE`) through the same classify/decide code the
daemon runs, with no hypervisor, and show what the policies would have done. By default it uses
the policies recorded in the trace and decides exactly as the recording daemon did. With
--policies or --compare the replay is open loop: at every tick the balloon size is the one
recorded, whatever the policy decided before.

Exit 0 on success, 1 when the trace or a policy cannot be used (the message names the file and
line), 2 on a usage error.
"""

LEGEND = """\
reclaimable: mean MiB below max the guest could have given and still kept its headroom
reclaimed:   mean MiB below max at the policy's standing target (its latest change)
pressure:    ticks in a pressure class while the standing target was below max
flips:       reversals between inflating and deflating"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "replay",
        help="replay a recorded trace through the engine: what would a policy have done?",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("trace", type=Path, metavar="TRACE", help="trace file (.jsonl or .jsonl.gz)")
    p.add_argument(
        "--policies",
        type=Path,
        default=None,
        metavar="DIR",
        help="replay under this policy directory instead of the policies recorded in the trace "
        "(open loop); needed for traces that record none",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("DIR_A", "DIR_B"),
        help="replay under two policy directories and show them side by side",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='one JSON line per guest per tick, then a {"summary": ...} line',
    )
    p.add_argument(
        "--plot",
        type=Path,
        metavar="OUT.png",
        help="also draw balloon size and target per guest, shaded by pressure class "
        "(needs autoballoon[plot])",
    )
    p.add_argument(
        "--guest",
        action="append",
        metavar="NAME",
        help="report only this guest (a name or glob; repeatable). All guests are still "
        "replayed: on-demand decisions depend on every guest.",
    )
    p.add_argument(
        "--no-strict-modes",
        action="store_true",
        help="accept policy files writable by other users (not recommended)",
    )
    p.set_defaults(func=run, parser=p)


class Progress:
    """A one-line progress indicator on stderr, redrawn at most five times a second."""

    def __init__(self, reader: TraceReader, stream: TextIO, enabled: bool) -> None:
        self.reader, self.stream, self.enabled = reader, stream, enabled
        self.ticks = 0
        self.next_draw = time.monotonic() + 0.5
        self.drawn = False

    def tick(self) -> None:
        self.ticks += 1
        if self.enabled and time.monotonic() >= self.next_draw:
            self.next_draw = time.monotonic() + 0.2
            done = self.reader.position / self.reader.size if self.reader.size else 1.0
            bar = "#" * int(done * 30)
            self.stream.write(f"\rreplay [{bar:<30}] {done:4.0%}  {self.ticks} ticks ")
            self.stream.flush()
            self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def run(args: argparse.Namespace) -> int:
    if args.compare and args.policies:
        args.parser.error("--compare DIR_A DIR_B replaces --policies; give one or the other")
    if args.plot:
        try:
            plot.load_pyplot()
        except plot.PlotUnavailable as err:
            return _error(str(err))

    dirs: list[Path] = list(args.compare) if args.compare else [args.policies] * bool(args.policies)
    try:
        reader = TraceReader(args.trace)
    except TraceError as err:
        return _error(str(err))
    with reader:
        recorded = recorded_run(reader.header)
        replayers = []
        try:
            for d in dirs:
                pset = load_policy_dir(d, strict_modes=not args.no_strict_modes)
                replayers.append(Replayer(pset, keep_series=args.plot is not None))
        except PolicyFileError as err:
            return _error(str(err))
        if not dirs and recorded.policies is None:
            return _error(
                f"{args.trace}: the trace records no policies (it was written before trace "
                "format version 2, or by another recorder); pass --policies DIR"
            )
        if not dirs:
            replayers.append(Replayer(None, args.plot is not None, recorded))
        elif recorded.policies is not None:
            print(
                f"note: replaying under {' and '.join(map(str, dirs))}, not the policies "
                "recorded in the trace (open loop)",
                file=sys.stderr,
            )
        return _replay(args, reader, replayers, dirs or [Path(RECORDED)])


def _replay(
    args: argparse.Namespace, reader: TraceReader, replayers: list[Replayer], dirs: list[Path]
) -> int:
    patterns: Sequence[str] = args.guest or ()

    def wanted(name: str) -> bool:
        return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)

    out = sys.stdout
    progress = Progress(reader, sys.stderr, sys.stderr.isatty() and not args.json)
    emit = _tick_printer(out, len(replayers) == 2, wanted) if args.json else None
    try:
        for tick in reader:
            results = [r.feed(tick) for r in replayers]
            if emit:
                emit(results)
            progress.tick()
    except TraceError as err:
        return _error(str(err))
    finally:
        progress.finish()

    for problem in reader.problems:
        print(f"warning: {args.trace}: {problem}", file=sys.stderr)
    if reader.problem_count > len(reader.problems):
        more = reader.problem_count - len(reader.problems)
        print(f"warning: {args.trace}: {more} more problem(s) not shown", file=sys.stderr)

    labels = ["a", "b"] if args.compare else ["policies"]
    summaries = [_filtered(r.summary(), wanted) for r in replayers]
    seen = set().union(*(s["guests"] for s in summaries))
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(g, pattern) for g in seen):
            print(f"warning: no guest in the trace matches --guest {pattern!r}", file=sys.stderr)

    head = {
        "trace": str(args.trace),
        "host": reader.header["host"],
        "interval_s": reader.header["interval_s"],
        "ticks": summaries[0]["ticks"],
        "duration_s": summaries[0]["duration_s"],
        "dropped_stats": reader.problem_count,
        "loop": "open" if replayers[0].open_loop else "closed",
    }
    if args.json:
        if args.compare:
            body = head | {
                lab: {"policies": str(d), "guests": s["guests"]}
                for lab, d, s in zip(labels, dirs, summaries, strict=True)
            }
        else:
            body = head | {"policies": str(dirs[0]), "guests": summaries[0]["guests"]}
        out.write(_dumps({"summary": body}) + "\n")
    elif args.compare:
        out.write(render_compare(head, dirs, summaries))
    else:
        out.write(render_table(head, dirs[0], summaries[0]))

    if args.plot:
        guests = sorted(seen)
        if len(guests) > plot.MAX_GUESTS:
            print(
                f"warning: plotting the first {plot.MAX_GUESTS} of {len(guests)} guests; "
                "choose others with --guest",
                file=sys.stderr,
            )
            guests = guests[: plot.MAX_GUESTS]
        if not guests:
            return _error("nothing to plot: no guest in the trace (or none matches --guest)")
        runs = {str(d): r.series or {} for d, r in zip(dirs, replayers, strict=True)}
        title = f"{args.trace.name} (host {head['host']}): " + " vs ".join(str(d) for d in dirs)
        try:
            plot.plot_replay(args.plot, runs, guests, title)
        except (OSError, ValueError) as err:
            return _error(f"{args.plot}: cannot write the plot: {err}")
    return 0


def _tick_printer(
    out: TextIO, compare: bool, wanted: Callable[[str], bool]
) -> Callable[[list[list[Decision]]], None]:
    """The --json writer: one line per guest per tick, written one tick at a time."""

    def single(results: list[list[Decision]]) -> None:
        lines = [_dumps(decision_record(d)) for d in results[0] if wanted(d.guest)]
        if lines:
            out.write("\n".join(lines) + "\n")

    def side_by_side(results: list[list[Decision]]) -> None:
        lines = []
        for da, db in zip(results[0], results[1], strict=True):
            if not wanted(da.guest):
                continue
            rec: dict[str, Any] = {"t": da.t, "guest": da.guest, "current_kib": da.current_kib}
            for key, d in (("a", da), ("b", db)):
                r = decision_record(d)
                rec[key] = {k: r[k] for k in ("class", "action", "target_kib", "reason")}
            lines.append(_dumps(rec))
        if lines:
            out.write("\n".join(lines) + "\n")

    return side_by_side if compare else single


def _filtered(summary: dict[str, Any], wanted: Callable[[str], bool]) -> dict[str, Any]:
    return summary | {"guests": {g: v for g, v in summary["guests"].items() if wanted(g)}}


# --- human output ---------------------------------------------------------------------------


def _heading(head: dict[str, Any]) -> str:
    interval = head["interval_s"]
    return (
        f"trace {head['trace']}: host {head['host']}, {head['ticks']} ticks over "
        f"{head['duration_s']:g} s (every {interval:g} s); {head['loop']} loop\n"
    )


def _classes(c: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def render_table(head: dict[str, Any], policies: Path, summary: dict[str, Any]) -> str:
    """The per-guest table of one replay."""
    lines = [_heading(head).rstrip(), f"policies {policies}", ""]
    guests: dict[str, dict[str, Any]] = summary["guests"]
    if not guests:
        lines.append("no guest to report")
        return "\n".join(lines) + "\n"
    width = max(len("guest"), *(len(g) for g in guests))
    cols = ("ticks", *ACTIONS, "reclaimable MiB", "reclaimed MiB", "pressure", "flips")
    lines.append(f"{'guest':<{width}}  " + "  ".join(f"{c:>{max(len(c), 7)}}" for c in cols))
    for name, g in guests.items():
        values = (
            g["ticks"],
            *(g["actions"][a] for a in ACTIONS),
            f"{g['reclaimable_mib']:.1f}",
            f"{g['reclaimed_mib']:.1f}",
            g["pressure_ticks_inflated"],
            g["direction_changes"],
        )
        lines.append(
            f"{name:<{width}}  "
            + "  ".join(f"{v:>{max(len(c), 7)}}" for c, v in zip(cols, values, strict=True))
        )
    lines += ["", "ticks per class:"]
    lines += [f"{name:<{width}}  {_classes(g['classes'])}" for name, g in guests.items()]
    lines += ["", LEGEND]
    return "\n".join(lines) + "\n"


def render_compare(head: dict[str, Any], dirs: Sequence[Path], summaries: Sequence[Any]) -> str:
    """Two replays of the same trace, metric by metric: A, B and B - A."""
    a, b = (s["guests"] for s in summaries)
    lines = [_heading(head).rstrip(), f"A: {dirs[0]}", f"B: {dirs[1]}", ""]
    if not a:
        lines.append("no guest to report")
        return "\n".join(lines) + "\n"
    lines.append(f"{'':<28}{'A':>12}{'B':>12}{'B - A':>12}")

    def row(label: str, va: float, vb: float, fmt: str) -> str:
        diff = vb - va
        d = "" if diff == 0 else f"{diff:+{fmt}}"
        return f"  {label:<26}{va:>12{fmt}}{vb:>12{fmt}}{d:>12}"

    for name in a:
        ga, gb = a[name], b[name]
        lines.append(name)
        for act in ACTIONS:
            lines.append(row(act, ga["actions"][act], gb["actions"][act], "d"))
        lines.append(row("reclaimable MiB", ga["reclaimable_mib"], gb["reclaimable_mib"], ".1f"))
        lines.append(row("reclaimed MiB", ga["reclaimed_mib"], gb["reclaimed_mib"], ".1f"))
        lines.append(
            row("pressure", ga["pressure_ticks_inflated"], gb["pressure_ticks_inflated"], "d")
        )
        lines.append(row("flips", ga["direction_changes"], gb["direction_changes"], "d"))
        for klass in sorted(set(ga["classes"]) | set(gb["classes"])):
            lines.append(
                row(f"class {klass}", ga["classes"].get(klass, 0), gb["classes"].get(klass, 0), "d")
            )
    lines += ["", LEGEND]
    return "\n".join(lines) + "\n"
