"""Summarise the feature-dropout study (issue 19): suppression curves against the overlay's opacity and the
viewmaker's budget, label destruction read by the oracles, and the paired suppression table.

Run the two grids first (quick preset, shapes, 3 seeds; the default loss):

    featdrop grid --runs-dir runs/study19 --workers 2 overlay=shapes preset=quick \\
        overlay_opacity=0,0.5,1.0 views=expert,viewmaker seed=0,1,2
    featdrop grid --runs-dir runs/study19-budget --workers 2 overlay=shapes preset=quick views=viewmaker \\
        budget=0.1,0.2 overlay_opacity=0,1.0 seed=0,1,2

then ``python scripts/study_dropout.py runs/study19 runs/study19-budget docs/study_dropout.png``.
"""
from __future__ import annotations

import sys

import matplotlib.pyplot as plt
import pandas as pd

from featdrop import rundir
from featdrop.lab import tables
from featdrop.viz import compare

PANELS = [("probe_main", "class probe (main)", "chance_main"), ("probe_alt", "shape probe (alternate)",
                                                                "chance_alt"),
          ("alt_destroyed", "views destroying the shape (oracle)", None),
          ("main_destroyed", "views destroying the class (oracle)", None)]


def main(opacity_dir: str = "runs/study19", budget_dir: str = "runs/study19-budget",
         figure: str = "docs/study_dropout.png") -> None:
    df = pd.concat([tables.collect(opacity_dir), tables.collect(budget_dir)], ignore_index=True)
    by_opacity = df[df.budget == 0.05]
    by_budget = df[df.views == "viewmaker"]
    fig, axes = plt.subplots(2, len(PANELS), figsize=(4.1 * len(PANELS), 7.2))
    compare.metric_curves(by_opacity, "overlay_opacity", PANELS, lines=("views",), axes=axes[0])
    compare.metric_curves(by_budget, "budget", PANELS, lines=("overlay_opacity",), axes=axes[1])
    axes[0, 0].set_ylabel("budget 0.05: against the shape's opacity")
    axes[1, 0].set_ylabel("viewmaker views: against the budget ε")
    fig.suptitle("shapes, quick preset (ConvNet, 5,000 images, 10 epochs), 3 seeds: mean ± sd", fontsize=10)
    fig.tight_layout()
    print(f"wrote {rundir.save_figure(fig, figure)}\n")
    counts = df.groupby(["views", "overlay_opacity", "budget"]).size()
    print("runs per cell:", ", ".join(f"{v} op {o:g} ε {b:g}: {n}" for (v, o, b), n in counts.items()), "\n")
    print(markdown(df))


def markdown(df) -> str:
    """The table of the results page: per cell, the paired suppression of the class (probe and kNN) and the
    mean ± sd of the probes and of label destruction."""
    paired = tables.paired_suppression(df).set_index(["views", "overlay_opacity", "budget"])
    rows = ["| views | opacity | ε | n | suppression: class probe (p) | suppression: class kNN (p) | "
            "probe class | probe shape | alt_destroyed | main_destroyed | wall s |", "|---" * 11 + "|"]
    for (views, opacity, budget), cell in df.groupby(["views", "overlay_opacity", "budget"]):
        key = (views, opacity, budget)
        sup = [tables.format_paired(paired.loc[[key]])[c].iloc[0] if key in paired.index else "– (control)"
               for c in ("suppression_main", "suppression_knn_main")]
        stat = [tables.mean_sd(cell[c]) if c in cell else "–" for c in ("probe_main", "probe_alt",
                                                                        "alt_destroyed",
                                                                         "main_destroyed", "wall_s")]
        rows.append(f"| {views} | {opacity:g} | {budget:g} | {len(cell)} | {sup[0]} | {sup[1]} | "
                    + " | ".join(stat) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main(*sys.argv[1:])
