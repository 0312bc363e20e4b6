"""Figures. Every function returns a matplotlib Figure; saving is the caller's job (see runs.save_figure)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .data import CIFAR10_CLASSES
from .overlays import LETTERS, SHAPES


def alt_class_names(overlay: str) -> list[str]:
    return {"shapes": list(SHAPES), "digits": [str(i) for i in range(10)], "letters": list(LETTERS),
            "noise": ["babble", "traffic", "machinery"], "none": ["-"]}[overlay]


def _to_hwc(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 or float in [0, 1] → (H, W, 3) float in [0, 1] for imshow."""
    img = img.detach().cpu()
    img = img.float() / 255 if img.dtype == torch.uint8 else img.float()
    return img.clamp(0, 1).permute(1, 2, 0).numpy()


def gallery(images: torch.Tensor, labels: torch.Tensor, alt_labels: torch.Tensor, overlay: str,
            rows: int = 4, cols: int = 8, main_names=CIFAR10_CLASSES):
    """Grid of examples, each titled with its main label and its alternate (overlay) label."""
    alt_names = alt_class_names(overlay)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.75 * rows))
    for i, ax in enumerate(np.asarray(axes).flat):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(_to_hwc(images[i]), interpolation="nearest")
        alt = alt_names[int(alt_labels[i])] if overlay != "none" else ""
        ax.set_title(f"{main_names[int(labels[i])]}\n{alt}", fontsize=8)
    fig.suptitle(f"overlay = {overlay}: title = main label / alternate label", fontsize=10)
    fig.tight_layout()
    return fig


def loss_curves(history: list[dict]):
    """Per epoch: the contrastive loss (and the viewmaker's), the kNN monitor, and the game's health
    (positive accuracy, the fraction of views that drop each label, the viewmaker's budget share on
    the overlay beside the overlay's area share)."""
    ep = np.array([r["epoch"] for r in history])
    fig, (ax, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.5))
    ax.plot(ep, [r["loss"] for r in history], "o-", label="encoder loss")
    if "viewmaker_loss" in history[0]:
        ax.plot(ep, [-r["viewmaker_loss"] for r in history], "s--", label="loss on the viewmaker step")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax2.plot(ep, [r["knn_main"] for r in history], "o-", label="main label")
    ax2.plot(ep, [r["knn_alt"] for r in history], "s-", label="alternate label")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("kNN accuracy (monitor)")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=8)
    curves = (("pos_acc", "positive found (pos_acc)", "o-"), ("alt_dropped", "views dropping the alt label", "s-"),
              ("main_dropped", "views dropping the main label", "^-"),
              ("overlay_budget_share", "share of |δ| on the overlay", "D-"),
              ("overlay_area_share", "overlay's share of the area", "k:"))
    for key, label, style in curves:
        if any(key in r for r in history):
            ax3.plot(ep, [r.get(key, np.nan) for r in history], style, label=label, markersize=4)
    ax3.set_xlabel("epoch")
    ax3.set_ylabel("fraction")
    ax3.set_ylim(0, 1.02)
    ax3.set_title("game health", fontsize=9)
    ax3.legend(fontsize=7)
    fig.tight_layout()
    return fig


def view_grid(originals: torch.Tensor, views: list[torch.Tensor], perturbations: list[torch.Tensor] | None = None,
              titles: list[list[str]] | None = None, amplify: float = 5.0, spectrogram: bool = False):
    """Rows = examples; columns = the original, then each view (and, for a viewmaker, each view's
    perturbation δ amplified ``amplify``× around grey). Images in [0, 1] or uint8, (N, C, H, W)."""
    n, k = len(originals), len(views)
    cols = 1 + k * (2 if perturbations is not None else 1)
    fig, axes = plt.subplots(n, cols, figsize=(1.7 * cols, 1.8 * n), squeeze=False)
    for i in range(n):
        panels = [(originals[i], "original")]
        for j in range(k):
            t = titles[i][j] if titles else f"view {j + 1}"
            panels.append((views[j][i], t))
            if perturbations is not None:
                panels.append((0.5 + amplify * perturbations[j][i], f"δ{j + 1} ×{amplify:g}"))
        for ax, (img, title) in zip(axes[i], panels):
            if spectrogram:
                ax.imshow(img[0].detach().float().cpu().numpy(), origin="lower", aspect="auto", cmap="magma")
            else:
                ax.imshow(_to_hwc(img), interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    return fig


def probe_bars(metrics: dict, title: str = ""):
    """Linear-probe and kNN accuracy for the main, the alternate and (CIFAR-10) the coarse label, with
    chance marked. The alternate label is left out when it is constant (overlay "none")."""
    import numpy as np

    labels = {"main": "main label", "alt": "alternate label", "coarse": "coarse label"}
    names = [n for n in labels if f"probe_{n}" in metrics and not (n == "alt" and metrics.get("chance_alt") == 1.0)]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.5 + 1.5 * len(names), 3.5))
    ax.bar(x - 0.2, [metrics[f"probe_{n}"] for n in names], 0.4, label="linear probe")
    if all(f"knn_{n}" in metrics for n in names):
        ax.bar(x + 0.2, [metrics[f"knn_{n}"] for n in names], 0.4, label="kNN")
    for i, (xi, n) in enumerate(zip(x, names)):
        ax.hlines(metrics[f"chance_{n}"], xi - 0.4, xi + 0.4, colors="k", linestyles=":", label="chance" if i == 0 else None)
    ax.set_xticks(x, [labels[n] for n in names])
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def comparison(df, value: str = "probe", title: str = ""):
    """Seaborn bars: overlay × views → accuracy on the main and the alternate label (mean ± sd over seeds).

    ``df`` has one row per run with columns overlay, views, seed, probe_main, probe_alt (and knn_*)."""
    import pandas as pd
    import seaborn as sns

    long = pd.concat([df.assign(label=lab, accuracy=df[f"{value}_{key}"])
                      for key, lab in (("main", "main label"), ("alt", "alternate label"))])
    g = sns.catplot(data=long, x="overlay", y="accuracy", hue="views", col="label", kind="bar",
                    errorbar="sd", height=3.2, aspect=1.2, palette="deep")
    g.set(ylim=(0, 1))
    for ax in g.axes.flat:  # the individual seeds as dots
        lab = ax.get_title().split(" = ")[-1]
        sns.stripplot(data=long[long.label == lab], x="overlay", y="accuracy", hue="views", dodge=True,
                      ax=ax, palette="dark:k", size=3, legend=False)
    g.figure.suptitle(title or f"linear {value} accuracy by overlay and views", y=1.03)
    return g.figure


def suppression_curve(df, x: str, lines=("views",), title: str = ""):
    """Linear-probe accuracy against a swept number ``x`` (e.g. overlay_opacity), one panel per label
    (main, alternate, and coarse when present), one line per value of the ``lines`` columns (the views
    type, say), mean ± sd over seeds as a band, chance dotted.

    ``df`` has one row per run with columns ``x``, the ``lines`` columns, probe_<label> and chance_<label>."""
    names = (("main", "main label"), ("alt", "alternate label"), ("coarse", "coarse label"))
    panels = [(k, name) for k, name in names if f"probe_{k}" in df and df[f"probe_{k}"].notna().any()]
    lines = [c for c in lines if c in df and c != x]
    groups = list(df.groupby(lines, dropna=False)) if lines else [((), df)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.5), squeeze=False, sharey=True)
    for ax, (key, name) in zip(axes[0], panels):
        for gkey, g in groups:
            stats = g.groupby(x)[f"probe_{key}"].agg(["mean", "std"]).sort_index()
            xs, mean, sd = stats.index.to_numpy(float), stats["mean"].to_numpy(), stats["std"].fillna(0).to_numpy()
            label = " / ".join(map(str, gkey if isinstance(gkey, tuple) else (gkey,)))
            (line,) = ax.plot(xs, mean, "o-", label=label or "runs")
            ax.fill_between(xs, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, linewidth=0)
        if f"chance_{key}" in df:
            ax.axhline(df[f"chance_{key}"].mean(), color="k", linestyle=":", linewidth=1, label="chance")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(x)
        ax.set_ylim(0, 1)
    axes[0, 0].set_ylabel("linear-probe accuracy (test)")
    axes[0, -1].legend(fontsize=8, title=" / ".join(lines) or None, title_fontsize=8)
    fig.suptitle(title or f"probe accuracy against {x} (mean ± sd over seeds)", fontsize=10)
    fig.tight_layout()
    return fig


HEALTH_KEYS = (("loss", "training loss"), ("pos_acc", "pos_acc: positive is the nearest"),
               ("alt_dropped", "alt_dropped: views that drop the overlay"),
               ("main_dropped", "main_dropped: views that drop the class"),
               ("overlay_budget_share", "share of |δ| on the overlay"), ("knn_main", "kNN, main label (monitor)"))


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
            ax.fill_between(ep, np.nanmin(arr, 0), np.nanmax(arr, 0), color=line.get_color(), alpha=0.15, linewidth=0)
            if key == "overlay_budget_share":
                area = np.array([[r.get("overlay_area_share", np.nan) for r in h[:n]] for h in runs], dtype=float)
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
