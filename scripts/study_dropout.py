"""Summarise the feature-dropout study (issue 19): suppression curves against the overlay's opacity and the
viewmaker's budget, label destruction read by the oracles, and the paired suppression table.

Run the grids first (quick preset, shapes, 3 seeds; the default loss); the second is optional:

    featdrop grid --runs-dir runs/study19 --workers 2 overlay=shapes preset=quick \\
        views=expert,viewmaker overlay_opacity=1.0,0,0.5 seed=0,1,2
    featdrop grid --runs-dir runs/study19-budget --workers 2 overlay=shapes preset=quick views=viewmaker \\
        budget=0.1,0.2 overlay_opacity=0,1.0 seed=0,1,2

then ``python scripts/study_dropout.py runs/study19 runs/study19-budget docs/study_dropout.png``. Only cells
with all their seeds (``--seeds``, default 3) are drawn; the table lists every cell with its count.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from featdrop import rundir
from featdrop.lab import tables
from featdrop.viz import compare

PANELS = [("probe_main", "class probe (main)", "chance_main"), ("probe_alt", "shape probe (alternate)",
                                                                "chance_alt"),
          ("alt_destroyed", "views destroying the shape (oracle)", None),
          ("main_destroyed", "views destroying the class (oracle)", None)]


CELL = ["views", "overlay_opacity", "budget"]


def main(opacity_dir: str = "runs/study19", budget_dir: str = "runs/study19-budget",
         figure: str = "docs/study_dropout.png", seeds: int = 3) -> None:
    started = [d for d in (opacity_dir, budget_dir) if any(Path(d).glob("*/metrics.json"))]  # a finished run
    df = pd.concat([tables.collect(d) for d in started], ignore_index=True)
    df["suppression_main"] = tables.suppression_per_run(df, "probe_main")
    counts = df.groupby(CELL).size()
    print("runs per cell:", ", ".join(f"{v} op {o:g} ε {b:g}: {n}" for (v, o, b), n in counts.items()), "\n")
    full = df[df.groupby(CELL)["seed"].transform("size") == int(seeds)]
    panels = PANELS + [("suppression_main", "class suppression (paired)", None)]
    by_opacity, by_budget = full[full.budget == 0.05], full[full.views == "viewmaker"]
    rows = [(by_opacity, "overlay_opacity", ("views",), "budget 0.05: against the shape's opacity"),
            (by_budget, "budget", ("overlay_opacity",), "viewmaker views: against the budget ε")]
    rows = [r for r in rows if r[0][r[1]].nunique() > 1]  # a row only where its x was swept
    if not rows:
        print(f"no curve yet: no swept field has two values whose cells have all {seeds} seeds\n")
        print(markdown(df))
        return
    fig, axes = plt.subplots(len(rows), len(panels), figsize=(3.9 * len(panels), 3.6 * len(rows)),
                             squeeze=False)
    for ax_row, (part, x, lines, ylabel) in zip(axes, rows):
        compare.metric_curves(part, x, panels, lines=lines, axes=ax_row)
        ax_row[0].set_ylabel(ylabel)
        lo, hi = part[x].min(), part[x].max()  # one x range for the row (alt_destroyed has no opacity 0)
        for ax in ax_row:
            ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        last = ax_row[-1]                       # a difference: its own scale, zero marked
        last.set_ylim(auto=True)
        last.relim()
        last.autoscale_view()
        last.axhline(0, color="k", linewidth=0.8)
        last.set_ylabel("probe(opacity 0) − probe, same seed")
    fig.suptitle(f"shapes, quick preset (ConvNet, 5,000 images, 10 epochs), {seeds} seeds per point: "
                 f"mean ± sd", fontsize=10)
    fig.tight_layout()
    print(f"wrote {rundir.save_figure(fig, figure)}\n")
    print("\n".join(budget_effect(df)), "\n")
    print(markdown(df))


def budget_effect(df, base: float = 0.05) -> list[str]:
    """Per larger budget ε, at each opacity above 0: the class suppression's change from ε ``base``, paired by
    seed, with a paired t-test over the seeds (does a stronger viewmaker give the class back?)."""
    vm = df[(df.views == "viewmaker") & (df.overlay_opacity > 0)]
    lines = []
    for opacity, part in vm.groupby("overlay_opacity"):
        by_seed = part.pivot_table(index="seed", columns="budget", values="suppression_main")
        for budget in [b for b in by_seed if b != base and base in by_seed]:
            d = (by_seed[budget] - by_seed[base]).dropna()
            mean, sd, p = tables.paired_stats(d)
            lines.append(f"opacity {opacity:g}, ε {budget:g} against ε {base:g}: class suppression "
                         f"{mean:+.3f} ± {sd:.3f} over {len(d)} seeds (paired p {p:.2g})")
    return lines


def markdown(df) -> str:
    """The table of the results page: per cell, the paired suppression of the class (probe and kNN) and the
    mean ± sd of the probes and of label destruction."""
    paired = tables.paired_suppression(df)
    for field in CELL:  # a field not swept: one value for every cell
        if field not in paired:
            paired[field] = df[field].iloc[0]
    paired = paired.set_index(CELL)
    rows = ["| views | opacity | ε | n | suppression: class probe (p) | suppression: class kNN (p) | "
            "probe class | probe shape | alt_destroyed | main_destroyed | wall s |", "|---" * 11 + "|"]
    for (views, opacity, budget), cell in df.groupby(["views", "overlay_opacity", "budget"]):
        key = (views, opacity, budget)
        sup = [tables.format_paired(paired.loc[[key]])[c].iloc[0] if key in paired.index else "– (control)"
               for c in ("suppression_main", "suppression_knn_main")]
        stat = [tables.mean_sd(cell[c]) if c in cell else "–" for c in ("probe_main", "probe_alt",
                                                                        "alt_destroyed", "main_destroyed")]
        stat.append(tables.mean_sd(cell.wall_s, digits=0))  # seconds
        rows.append(f"| {views} | {opacity:g} | {budget:g} | {len(cell)} | {sup[0]} | {sup[1]} | "
                    + " | ".join(stat) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main(*sys.argv[1:])
