"""The audio suppression study (issue 30): does the background noise suppress the spoken digit, under expert
and viewmaker views? Spoken digits (FSDD) with babble, traffic or machinery noise, the quick audio preset
(its recipe: `tcnet`, time-shift / stretch / gain views, 10 epochs), noise volume nearly off (0.001, the
control), at the default (0.05) and louder (0.2), three seeds:

    featdrop grid --runs-dir runs/study30 overlay=noise preset=quick views=expert,viewmaker \\
        game=simultaneous noise_volume=0.001,0.05,0.2 seed=0,1,2
    python scripts/study_audio.py runs/study30 docs/study_audio.png runs/audio30/bounds/bounds.json

Suppression is paired by views and seed: probe(volume 0.001) − probe(volume). The bounds file
(scripts/audio_bounds.py) adds the floor (a linear probe on the raw log-mels) and the ceiling (the encoder
trained supervised on the digit) at the volumes it measured.
"""
from __future__ import annotations

import json
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from featdrop import rundir
from featdrop.lab import tables
from featdrop.viz import plots

CONTROL = 0.001


def load(runs_dir: str) -> pd.DataFrame:
    df = tables.collect(runs_dir)
    for metric in ("probe_main", "knn_main", "probe_alt"):
        df[f"suppression_{metric}"] = tables.suppression_per_run(df, metric)
    return df


def table(df: pd.DataFrame) -> str:
    rows = ["| views | noise_volume | n | probe: digit | kNN: digit | probe: noise type | suppression: digit "
            "probe (p) | suppression: digit kNN (p) | `alt_destroyed` | `main_destroyed` | positive found |",
            "|---" * 11 + "|"]
    for (views, volume), cell in df.groupby(["views", "noise_volume"]):
        sup = []
        for metric in ("suppression_probe_main", "suppression_knn_main"):
            if volume == CONTROL:
                sup.append("– (control)")
                continue
            mean, sd, p = tables.paired_stats(cell[metric].dropna())
            sup.append("–" if np.isnan(mean) else f"{mean:+.3f}" + ("" if np.isnan(sd) else f" ± {sd:.3f}")
                       + ("" if np.isnan(p) else f" (p {p:.2g})"))
        stats = [tables.mean_sd(cell[c]) if c in cell else "–"
                 for c in ("probe_main", "knn_main", "probe_alt")]
        destroyed = [tables.mean_sd(cell[c]) if c in cell and cell[c].notna().any() else "–"
                     for c in ("alt_destroyed", "main_destroyed")]
        pos = [rundir.read_history(f"{run}/history.jsonl")[-1].get("pos_acc", np.nan)
               for run in cell["run"]]
        rows.append(f"| {views} | {volume:g} | {len(cell)} | " + " | ".join(stats)
                    + f" | {sup[0]} | {sup[1]} | " + " | ".join(destroyed) + f" | {tables.mean_sd(pos)} |")
    return "\n".join(rows)


def figure(df: pd.DataFrame, bounds: list[dict], path: str):
    panels = [("probe_main", "digit, linear probe"), ("knn_main", "digit, kNN"),
              ("suppression_probe_main", "digit suppression, probe (paired with 0.001)"),
              ("main_destroyed", "views destroying the digit (reader)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.7))
    for ax, (metric, title) in zip(axes, panels):
        for views, colour in (("expert", "C0"), ("viewmaker", "C3")):
            g = df[df.views == views].groupby("noise_volume")[metric]
            x, mean, sd = g.mean().index, g.mean().values, g.std().fillna(0).values
            ax.errorbar(x, mean, yerr=sd, color=colour, marker="o", capsize=3, label=views)
        if metric == "probe_main" and bounds:
            b = pd.DataFrame(bounds)
            ceil = b[b.what.str.startswith("supervised")].groupby("noise_volume").digit.max()
            floor = b[b.what.str.startswith("log-mel")].groupby("noise_volume").digit.max()
            ax.plot(ceil.index, ceil.values, "k^--", linewidth=0.8, label="supervised (ceiling)")
            ax.plot(floor.index, floor.values, "kv:", linewidth=0.8, label="raw log-mel (floor)")
        if metric in ("probe_main", "knn_main"):
            ax.axhline(0.1, color="grey", linewidth=0.8, linestyle=":")
        plots.log_x_panel(ax, title, "noise volume (peak, log)", zero_line=metric.startswith("suppression"))
    title = ("spoken digits (FSDD) with background noise, quick audio preset: mean ± sd over seeds; "
             "chance 0.10 (dotted)")
    return plots.study_figure_done(fig, axes, title, path)


def main(runs_dir: str = "runs/study30", path: str = "docs/study_audio.png",
         bounds_file: str | None = None) -> None:
    df = load(runs_dir)
    print(table(df), "\n")
    bounds = json.loads(open(bounds_file).read()) if bounds_file else []
    print(f"wrote {figure(df, bounds, path)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
