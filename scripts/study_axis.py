"""The study's training axis (issue 29): suppression and label destruction as training grows, expert and
viewmaker views at the shape's opacity 0 and 1, at three training lengths (more data and more epochs). Each
length and views is a grid of its own (their cells' names are the same, their configs are not):

    featdrop grid --runs-dir runs/study29-game overlay=shapes preset=quick views=viewmaker \
        game=alternating,simultaneous overlay_opacity=1.0,0 seed=0,1,2   # L1 viewmaker: 48,640 image-steps
    featdrop grid --runs-dir runs/study29-axis/L1-expert overlay=shapes preset=quick views=expert \
        seed=0,1,2 overlay_opacity=1.0,0                                        # L1 expert
    featdrop grid --runs-dir runs/study29-axis/L2-viewmaker overlay=shapes preset=quick views=viewmaker \
        game=simultaneous overlay_opacity=1.0,0 seed=0 subset=10000 epochs=10   # L2:  99,840
    featdrop grid --runs-dir runs/study29-axis/L2-expert overlay=shapes preset=quick views=expert \
        overlay_opacity=1.0,0 seed=0 subset=10000 epochs=10
    featdrop grid --runs-dir runs/study29-axis/L3-expert overlay=shapes preset=quick views=expert \
        overlay_opacity=1.0,0 seed=0 subset=25000 epochs=20                     # L3: 496,640
    featdrop grid --runs-dir runs/study29-axis/L3-viewmaker overlay=shapes preset=quick views=viewmaker \
        game=simultaneous overlay_opacity=1.0,0 seed=0 subset=25000 epochs=20

and seeds 1 and 2 of L2 and L3 in grids of their own beside them (``runs/study29-axis/L2-expert-s12``,
``L2-viewmaker-s12``, ``L3-expert-s12``: the same commands with ``seed=1,2``), then ``python
scripts/study_axis.py docs/study_axis.png`` (every grid under ``runs/study29-axis`` and the game study that
has finished runs), or
``python scripts/study_axis.py PNG DIR ...`` for any run folders (runs are told apart by their image-steps;
the game study's alternating runs are left out: the axis uses game=simultaneous). Image-steps = steps per
epoch (drop_last) × batch × epochs: the number of images a run's encoder stepped on. Suppression is paired
within a length, views and seed: probe(opacity 0) − probe(opacity 1). The paper's regime, for the figure's
arrow: 200 epochs of all 50,000 images at batch 256 (9,984,000 image-steps) and a ResNet-18, which no point
here has.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from featdrop import config
from featdrop.lab import tables
from featdrop.viz import plots

PAPER_IMAGE_STEPS = 50_000 // 256 * 256 * 200
PANELS = [("suppression_main", "class suppression, probe (paired)"),
          ("suppression_knn_main", "class suppression, kNN (paired)"),
          ("alt_destroyed", "views destroying the shape (oracle)"),
          ("main_destroyed", "views destroying the class (oracle)")]


def image_steps(row) -> int:
    n = config.size(row["subset"]) or 50_000
    return n // int(row["batch_size"]) * int(row["batch_size"]) * int(row["epochs"])


def load(dirs) -> pd.DataFrame:
    df = pd.concat([tables.collect(d) for d in dirs], ignore_index=True)
    # the axis plays the simultaneous game (issue 29's answer); the game study's alternating runs stay out
    df = df[~((df.views == "viewmaker") & (df.game == "alternating"))].reset_index(drop=True)
    df["image_steps"] = df.apply(image_steps, axis=1)
    # pairing within a length: the control differs only in opacity, same length, views, game, seed
    df["suppression_main"] = tables.suppression_per_run(df, "probe_main")
    df["suppression_knn_main"] = tables.suppression_per_run(df, "knn_main")
    return df


def table(df: pd.DataFrame) -> str:
    rows = ["| views | image-steps (subset × epochs) | n | suppression: class probe (p) | suppression: class "
            "kNN (p) | probe class | probe shape | alt_destroyed | main_destroyed | wall s |",
            "|---" * 10 + "|"]
    for (views, steps), cell in df[df.overlay_opacity > 0].groupby(["views", "image_steps"]):
        sup = []
        for metric in ("suppression_main", "suppression_knn_main"):
            mean, sd, p = tables.paired_stats(cell[metric])
            sup.append("–" if np.isnan(mean) else f"{mean:+.3f}" + ("" if np.isnan(sd) else f" ± {sd:.3f}")
                       + ("" if np.isnan(p) else f" (p {p:.2g})"))
        first = cell.iloc[0]
        stat = [tables.mean_sd(cell[c])
                for c in ("probe_main", "probe_alt", "alt_destroyed", "main_destroyed")]
        images = config.size(first["subset"]) or 50_000
        rows.append(f"| {views} | {steps:,} ({images:,} × {first['epochs']}) | {len(cell)} | "
                    f"{sup[0]} | {sup[1]} | " + " | ".join(stat) + f" | {tables.mean_sd(cell.wall_s, 0)} |")
    return "\n".join(rows)


def treated(df: pd.DataFrame, views: str, metric: str | None = None) -> pd.DataFrame:
    """The runs of ``views`` with the shape on (opacity > 0), less those missing ``metric`` if named."""
    part = df[(df.views == views) & (df.overlay_opacity > 0)]
    return part if metric is None else part.dropna(subset=[metric])


def trend(df: pd.DataFrame, metric: str, views: str) -> tuple[float, float, float] | None:
    """Least squares of ``metric`` against log10(image-steps) over the runs of ``views`` (opacity 1), every
    seed a point: (slope per decade, value predicted at the paper's image-steps, two-sided p of the slope,
    NaN with no residual degrees of freedom); None with fewer than two lengths."""
    from scipy import stats

    part = treated(df, views, metric)
    if part.image_steps.nunique() < 2:
        return None
    fit = stats.linregress(np.log10(part.image_steps.to_numpy(float)), part[metric].to_numpy(float))
    p = fit.pvalue if len(part) > 2 else np.nan
    return fit.slope, fit.slope * np.log10(PAPER_IMAGE_STEPS) + fit.intercept, p


def change(df: pd.DataFrame, metric: str, views: str, lengths: tuple[int, int] | None = None
           ) -> tuple[float, float] | None:
    """Longest minus shortest length's mean of ``metric`` (opacity 1), or ``lengths[1]``'s minus
    ``lengths[0]``'s (image-steps), and its two-sided p (``compare``). None with fewer than two lengths."""
    part = treated(df, views, metric)
    if part.image_steps.nunique() < 2:
        return None
    first, last = lengths or (part.image_steps.min(), part.image_steps.max())
    return compare(part[part.image_steps == first][metric], part[part.image_steps == last][metric])


def compare(before, after) -> tuple[float, float]:
    """Mean of ``after`` minus mean of ``before`` and its two-sided p: Welch's t-test when both have two
    values or more; with one value on one side, that value as a new draw from the other side's
    distribution (t = (x - mean) / (sd * sqrt(1 + 1/n)), n - 1 degrees of freedom); p NaN when the side
    with several values has no spread, or neither side has several."""
    from scipy import stats

    a, b = np.asarray(before, float), np.asarray(after, float)
    diff = b.mean() - a.mean()
    if len(a) > 1 and len(b) > 1:
        return diff, stats.ttest_ind(b, a, equal_var=False).pvalue
    one, many = (b, a) if len(b) == 1 else (a, b)
    if len(many) < 2 or many.std(ddof=1) == 0:
        return diff, np.nan
    t = (one[0] - many.mean()) / (many.std(ddof=1) * np.sqrt(1 + 1 / len(many)))
    return diff, 2 * stats.t.sf(abs(t), len(many) - 1)


def views_gap(df: pd.DataFrame, metric: str, steps: int) -> tuple[float, float] | None:
    """At one length: expert minus viewmaker mean of ``metric`` (opacity 1) and its p (``compare``); None
    when either views has no run there. For suppression, a positive gap is the viewmaker suppressing less."""
    vm, ex = (part[part.image_steps == steps][metric]
              for part in (treated(df, "viewmaker", metric), treated(df, "expert", metric)))
    return compare(vm, ex) if len(vm) and len(ex) else None


def figure(df: pd.DataFrame, path: str):
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.7))
    for ax, (metric, title) in zip(axes, PANELS):
        for views, colour, dy in (("expert", "C0", 4), ("viewmaker", "C3", -10)):  # n labels above, below
            part = treated(df, views)
            if part[metric].isna().all():
                continue
            g = part.groupby("image_steps")[metric]
            x, mean, sd, n = g.mean().index, g.mean().values, g.std().fillna(0).values, g.count().values
            ax.errorbar(x, mean, yerr=sd, color=colour, marker="o", capsize=3, label=f"{views}")
            for xi, yi, ni in zip(x, mean, n):
                ax.annotate(f"n={ni}", (xi, yi), textcoords="offset points", xytext=(4, dy), fontsize=7)
            fit = trend(df, metric, views)
            if fit is not None:
                xs = np.array([x.min(), PAPER_IMAGE_STEPS])
                slope, at_paper, _ = fit
                ys = at_paper + slope * (np.log10(xs) - np.log10(PAPER_IMAGE_STEPS))
                ax.plot(xs, ys, color=colour, linestyle=":", linewidth=1)
                ax.plot([PAPER_IMAGE_STEPS], [at_paper], marker="x", color=colour)
        ax.axvline(PAPER_IMAGE_STEPS, color="grey", linewidth=0.8, linestyle="--")
        plots.log_x_panel(ax, title, "image-steps (log)", zero_line=metric.startswith("suppression"))
    title = ("shapes at opacity 1, quick ConvNet: mean ± sd over seeds (n per point); dotted: the log-linear "
             "trend, x at the paper's 200 epochs (dashed line; a ResNet-18 there)")
    return plots.study_figure_done(fig, axes, title, path)


def main(path: str = "docs/study_axis.png", *dirs: str) -> None:
    if not dirs:  # the grids of the docstring that have finished runs
        dirs = [str(d) for d in [Path("runs/study29-game")] + sorted(Path("runs/study29-axis").glob("L*"))
                if list(d.glob("*/metrics.json"))]
    df = load(dirs)
    print(table(df), "\n")
    for metric, _ in PANELS:
        for views in ("expert", "viewmaker"):
            fit, moved = trend(df, metric, views), change(df, metric, views)
            if fit is not None:
                print(f"{views} {metric}: longest − shortest length {moved[0]:+.3f} (p {moved[1]:.2g}); "
                      f"{fit[0]:+.3f} per decade of image-steps (p {fit[2]:.2g}); at the paper's "
                      f"{PAPER_IMAGE_STEPS:,}: {fit[1]:.3f} (extrapolated)")
                steps = sorted(treated(df, views).image_steps.unique())
                for a, b in zip(steps, steps[1:]):  # each length against the one before
                    d, p = change(df, metric, views, (a, b))
                    print(f"    {a:,} → {b:,}: {d:+.3f} (p {p:.2g})")
    for metric in ("suppression_main", "suppression_knn_main"):
        for steps in sorted(df.image_steps.unique()):
            gap = views_gap(df, metric, steps)
            if gap is not None:
                print(f"{metric} at {steps:,}: expert − viewmaker {gap[0]:+.3f} (p {gap[1]:.2g})")
    print(f"wrote {figure(df, path)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
