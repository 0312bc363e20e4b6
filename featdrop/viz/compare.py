"""Figures across runs: probe accuracy by overlay and views, suppression curves against a swept number, the
game's health per epoch by group, and the suppression report's bars. Every function returns a Figure."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np


def comparison(df, value: str = "probe", title: str = ""):
    """Seaborn bars: overlay × views → accuracy on the main, the alternate and (CIFAR-10) the coarse label,
    mean ± sd over seeds with each seed as a dot and each overlay's chance dotted. A label a run does not
    have (the alternate label of overlay "none") gets no bar.

    ``df`` has one row per run with columns overlay, views, seed, <value>_<label> and chance_<label>."""
    import pandas as pd
    import seaborn as sns

    labels = [(k, name) for k, name in (("main", "main label"), ("alt", "alternate label"),
                                        ("coarse", "coarse label"))
              if f"{value}_{k}" in df and df[f"{value}_{k}"].notna().any()]
    long = pd.concat([df.assign(label=name, accuracy=df[f"{value}_{k}"].astype(float)) for k, name in labels])
    long = long[long.accuracy.notna()]
    order = list(dict.fromkeys(df["overlay"]))
    g = sns.catplot(data=long, x="overlay", y="accuracy", hue="views", col="label", kind="bar", errorbar="sd",
                    height=3.2, aspect=1.2, palette="deep", order=order, col_order=[n for _, n in labels])
    g.set(ylim=(0, 1))
    for ax, (key, name) in zip(g.axes.flat, labels):
        sns.stripplot(data=long[long.label == name], x="overlay", y="accuracy", hue="views", dodge=True,
                      ax=ax, palette="dark:k", size=3, legend=False, order=order)
        for i, overlay in enumerate(order):  # chance differs by overlay (3 shapes, 10 digits, 26 letters)
            chance = df.loc[df.overlay == overlay, f"chance_{key}"].astype(float).mean()
            if chance == chance:
                ax.hlines(chance, i - 0.4, i + 0.4, colors="k", linestyles=":", linewidth=1)
    g.figure.suptitle(title or f"{value} accuracy by overlay and views (dotted: chance)", y=1.03)
    return g.figure


def metric_curves(df, x: str, panels, lines=("views",), axes=None):
    """Each metric in ``panels`` ((column, title, chance column or None)) against a swept number ``x``, one
    line per value of the ``lines`` columns, mean ± sd over the seeds as a band, chance dotted. Draws on
    ``axes`` (one per panel) or a new row of them; returns the figure."""
    lines = [c for c in lines if c in df and c != x]
    groups = list(df.groupby(lines, dropna=False)) if lines else [((), df)]
    if axes is None:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.5), squeeze=False)
        axes = axes[0]
    for ax, (col, name, chance) in zip(axes, panels):
        for i, (gkey, g) in enumerate(groups):
            stats = g.groupby(x)[col].agg(["mean", "std", "count"]).sort_index()
            stats = stats[stats["count"] > 0]
            xs, mean, sd = (stats.index.to_numpy(float), stats["mean"].to_numpy(),
                            stats["std"].fillna(0).to_numpy())
            label = " / ".join(map(str, gkey if isinstance(gkey, tuple) else (gkey,)))
            (line,) = ax.plot(xs, mean, "o-", color=f"C{i}", label=label or "runs")
            ax.fill_between(xs, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, linewidth=0)
        if chance and chance in df and df[chance].notna().any():
            ax.axhline(df[chance].mean(), color="k", linestyle=":", linewidth=1, label="chance")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(x)
        ax.set_ylim(0, 1)
    axes[-1].legend(fontsize=8, title=" / ".join(lines) or None, title_fontsize=8)
    return axes[0].figure


def suppression_curve(df, x: str, lines=("views",), title: str = ""):
    """Linear-probe accuracy against a swept number ``x`` (e.g. overlay_opacity), one panel per label
    (main, alternate, and coarse when present), one line per value of the ``lines`` columns (the views
    type, say), mean ± sd over seeds as a band, chance dotted.

    ``df`` has one row per run with columns ``x``, the ``lines`` columns, probe_<label> and chance_<label>."""
    names = (("main", "main label"), ("alt", "alternate label"), ("coarse", "coarse label"))
    panels = [(f"probe_{k}", name, f"chance_{k}") for k, name in names
              if f"probe_{k}" in df and df[f"probe_{k}"].notna().any()]
    fig = metric_curves(df, x, panels, lines)
    fig.axes[0].set_ylabel("linear-probe accuracy (test)")
    fig.suptitle(title or f"probe accuracy against {x} (mean ± sd over seeds)", fontsize=10)
    fig.tight_layout()
    return fig


HEALTH_KEYS = (("loss", "training loss"), ("pos_acc", "pos_acc: positive is the nearest"),
               ("alt_dropped", "alt_dropped: views that drop the overlay"),
               ("main_dropped", "main_dropped: views that drop the class"),
               ("overlay_budget_share", "share of |δ| on the overlay"),
               ("knn_main", "kNN, main label (monitor)"))


def health_curves(groups: dict[str, list[list[dict]]], keys=HEALTH_KEYS, title: str = ""):
    """The game's health over training: one panel per history key, one line per group of runs (say,
    views × loss), mean over the runs (seeds) with a band from their min to max. ``groups`` maps a
    label to the runs' histories (lists of history.jsonl rows). The overlay's area share, where
    recorded, is drawn dotted in the budget-share panel as its chance level."""
    keys = [(k, t) for k, t in keys if any(k in row for runs in groups.values() for h in runs for row in h)]
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.1 * rows), squeeze=False)
    colour = {label: f"C{i}" for i, label in enumerate(groups)}  # one colour per group in every panel
    for ax, (key, name) in zip(axes.flat, keys):
        for label, runs in groups.items():
            curves = [[r.get(key, np.nan) for r in h] for h in runs]
            n = min(map(len, curves))
            if not n or all(np.isnan(c[:n]).all() for c in curves):
                continue
            arr = np.array([c[:n] for c in curves], dtype=float)
            ep = np.arange(1, n + 1)
            (line,) = ax.plot(ep, np.nanmean(arr, 0), "o-", markersize=3, color=colour[label],
                              label=f"{label} (n={len(runs)})")
            ax.fill_between(ep, np.nanmin(arr, 0), np.nanmax(arr, 0), color=line.get_color(), alpha=0.15,
                            linewidth=0)
            if key == "overlay_budget_share":
                area = np.array([[r.get("overlay_area_share", np.nan) for r in h[:n]] for h in runs],
                                dtype=float)
                ax.plot(ep, np.nanmean(area, 0), ":", color=line.get_color(), linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        if key != "loss":
            ax.set_ylim(0, 1.02)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title or "game health per epoch (mean over seeds; band: min to max)", fontsize=10)
    fig.tight_layout()
    return fig


def suppression_bars(table, title: str = ""):
    """Main, alternate and coarse probe accuracy per overlay, chance dotted, suppression under each
    overlay."""
    x = np.arange(len(table))
    bars = (("main", "CIFAR-10 class (main)", "C0"), ("alt", "overlay (alternate)", "C1"),
            ("coarse", "vehicle / animal (coarse)", "C2"))
    fig, ax = plt.subplots(figsize=(1.9 * len(table) + 2.5, 3.8))
    width = 0.27
    for j, (label, text, colour) in enumerate(bars):
        xs = x + (j - 1) * width
        acc, chance = table[f"probe_{label}"].to_numpy(float), table[f"chance_{label}"].to_numpy(float)
        ax.bar(xs, np.nan_to_num(acc), width, color=colour, alpha=0.55 if label == "coarse" else 1,
               label=text)
        ax.hlines(chance, xs - width / 2, xs + width / 2, colors="k", linestyles=":",
                  label="chance" if j == 0 else None)
        for xi, a, c in zip(xs, acc, chance):  # the value above the bar and its chance line
            ax.text(xi, np.nanmax([a, c, 0]) + 0.01, "–" if math.isnan(a) else f"{a:.2f}",
                    ha="center", va="bottom", fontsize=7)
    ticks = [o if o == "none" or math.isnan(s) else f"{o}\nsuppression {s:+.3f}"
             for o, s in zip(table.overlay, table.suppression_main)]
    ax.set_xticks(x, ticks)
    ax.set_xlabel("overlay (suppression = CIFAR-10 class accuracy lost against none)", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("linear-probe test accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return fig


def images(rows: list[tuple[str, list[tuple[str, str]]]], width: float = 11.0):
    """Saved figures side by side: one row per (row title, [(panel title, PNG path), ...])."""
    import matplotlib.image as mpimg

    cols = max(len(panels) for _, panels in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(width, width / cols * 0.5 * len(rows) + 0.4),
                             squeeze=False)
    for (name, panels), row in zip(rows, axes):
        for ax, (title, path) in zip(row, panels):
            ax.imshow(mpimg.imread(path))
            ax.set_title(f"{name}: {title}", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    return fig
