"""Plot a replay: per guest, balloon size and target over time, shaded by pressure class.

Sits at the very end of ``autoballoon replay --plot``; it draws what ``replay.Replayer`` kept
(change points only) and nothing else. matplotlib is an optional extra (``autoballoon[plot]``),
imported only here and only when a plot is asked for, so the daemon never needs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoballoon.replay import GuestSeries, Steps

INSTALL_HINT = (
    "--plot needs matplotlib: install autoballoon[plot] (pip install 'autoballoon[plot]')"
)

MAX_GUESTS = 16
"""Guests drawn at most in one figure; pick others with --guest."""

# Shading by how serious the class is; `none` is left white.
CLASS_COLOURS = {
    "unknown": "#dddddd",
    "light-pressure": "#fff3b0",
    "kswapd-reclaim": "#e3f2c1",
    "cgroup-oom": "#d6e4f0",
    "cgroup-stall": "#ffd59e",
    "reclaim-struggling": "#ffc080",
    "global-reclaim": "#ff9c8a",
    "thrashing": "#f0707a",
    "running-out": "#e05050",
    "oom": "#c0392b",
}

TARGET_STYLES = ("-", "--", ":")


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def load_pyplot() -> Any:
    """matplotlib.pyplot on a file-only backend, or ``PlotUnavailable`` with the install hint."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _xy(steps: Steps, t0: float, end_t: float, scale: float) -> tuple[list[float], list[float]]:
    xs = [(t - t0) / scale for t in steps.t]
    ys = [v / 1024 for v in steps.v]
    if xs:  # carry the last value to the end of the trace
        xs.append((end_t - t0) / scale)
        ys.append(ys[-1])
    return xs, ys


def _spans(
    klass: Steps, t0: float, end_t: float, scale: float
) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    bounds = [*klass.t, end_t]
    for i, name in enumerate(klass.v):
        if name in CLASS_COLOURS:
            start, stop = (bounds[i] - t0) / scale, (bounds[i + 1] - t0) / scale
            out.setdefault(name, []).append((start, max(stop - start, 1e-9)))
    return out


def plot_replay(
    out: Path,
    runs: Mapping[str, Mapping[str, GuestSeries]],
    guests: Sequence[str],
    title: str,
) -> None:
    """Write a PNG (or any format matplotlib knows from the suffix) of ``guests``.

    ``runs`` maps a label (a policy directory) to its series; the shading is the first run's
    classes, each run adds its own target line.
    """
    plt = load_pyplot()
    from matplotlib.patches import Patch

    labels = list(runs)
    first = runs[labels[0]]
    t0 = min((first[g].actual_kib.t[0] for g in guests if first[g].actual_kib.t), default=0.0)
    end = max((first[g].end_t for g in guests), default=t0)
    scale, unit = (60.0, "min") if end - t0 > 1800 else (1.0, "s")

    height = 1.4 + 2.2 * len(guests)  # inches: a band per guest, the title and the legend
    fig, axes = plt.subplots(len(guests), 1, figsize=(11, height), sharex=True, squeeze=False)
    seen: set[str] = set()
    for ax, guest in zip(axes[:, 0], guests, strict=True):
        series = first[guest]
        for name, ranges in _spans(series.klass, t0, series.end_t, scale).items():
            ax.broken_barh(
                ranges,
                (0, 1),
                transform=ax.get_xaxis_transform(),
                facecolors=CLASS_COLOURS[name],
                edgecolor="none",
                zorder=0,
            )
            seen.add(name)
        ax.plot(
            *_xy(series.actual_kib, t0, series.end_t, scale),
            drawstyle="steps-post",
            color="0.35",
            linewidth=2.6,
            label="balloon (actual)",
        )
        for i, label in enumerate(labels):
            s = runs[label][guest]
            ax.plot(
                *_xy(s.target_kib, t0, s.end_t, scale),
                drawstyle="steps-post",
                linestyle=TARGET_STYLES[i % len(TARGET_STYLES)],
                color=f"C{i}",
                linewidth=1.4,
                label="target" if len(labels) == 1 else f"target: {label}",
            )
        ax.set_ylabel("MiB")
        ax.set_title(guest, loc="left", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel(f"{unit} since the start of the trace")
    handles, names = axes[0, 0].get_legend_handles_labels()
    handles += [Patch(facecolor=CLASS_COLOURS[c], label=c) for c in CLASS_COLOURS if c in seen]
    names += [c for c in CLASS_COLOURS if c in seen]
    fig.legend(handles, names, loc="lower center", fontsize=8, ncols=min(len(names), 6))
    fig.suptitle(title, x=0.01, ha="left", fontsize=11)
    fig.tight_layout(rect=(0, 0.75 / height, 1, 1 - 0.35 / height))
    try:
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
