"""lab.png: balloon size per guest over time, per scenario and mode, with the oracle."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.lab.render import short
from benchmarks.lab.scenarios import MODES


def plot(raw: Mapping[str, Any], res: Mapping[tuple[str, str], Mapping[str, Any]],
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = raw["runs"]
    modes = [m for m in MODES if any(r["mode"] == m for r in runs)]
    scen = [s for s in ("mixed", "spike", "thrash") if any(r["scenario"] == s for r in runs)]
    fig, axes = plt.subplots(len(scen), len(modes), figsize=(4.6 * len(modes), 3.1 * len(scen)),
                             squeeze=False, sharey="row")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, sc in enumerate(scen):
        for j, m in enumerate(modes):
            ax = axes[i][j]
            g = res.get((sc, m))
            ax.set_title(f"{sc}: {m}", fontsize=9)
            if not g:
                ax.set_visible(False)
                continue
            for k, (name, row) in enumerate(g.items()):
                c = colors[k % len(colors)]
                xs = [t for t, _ in row["series"]]
                ys = [v for _, v in row["series"]]
                ax.step(xs, ys, where="post", color=c, lw=1.4, label=short(name).split("-", 1)[1])
                if row["oracle_mib"] is not None:
                    ax.axhline(row["max_mib"] - row["oracle_mib"], color=c, ls=":", lw=0.9)
                for t in row["oom_times_s"]:
                    y = next((v for x, v in reversed(row["series"]) if x <= t), ys[0] if ys else 0)
                    ax.plot([t], [y], "x", color="red", ms=7, mew=2)
                if row.get("spike_s"):
                    ax.axvspan(*row["spike_s"], color=c, alpha=0.08)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
            if j == 0:
                ax.set_ylabel("balloon size MiB", fontsize=8)
                ax.legend(fontsize=7, loc="lower left")
            if i == len(scen) - 1:
                ax.set_xlabel("seconds since controller start", fontsize=8)
    fig.suptitle("Balloon size per guest (solid) and the oracle's size: peak need + kernel "
                 "overhead (dotted); red x: guest OOM kill; shaded: a spike", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)

