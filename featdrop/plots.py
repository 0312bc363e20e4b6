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
    """Contrastive loss (and the viewmaker's) per epoch, with the kNN monitor on a second axis."""
    import numpy as np

    ep = np.array([r["epoch"] for r in history])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax.plot(ep, [r["loss"] for r in history], "o-", label="encoder loss")
    if "viewmaker_loss" in history[0]:
        ax.plot(ep, [-r["viewmaker_loss"] for r in history], "s--", label="loss on the viewmaker step")
    ax.set_xlabel("epoch")
    ax.set_ylabel("contrastive loss")
    ax.legend()
    ax2.plot(ep, [r["knn_main"] for r in history], "o-", label="main label")
    ax2.plot(ep, [r["knn_alt"] for r in history], "s-", label="alternate label")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("kNN accuracy (monitor)")
    ax2.set_ylim(0, 1)
    ax2.legend()
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
    """Linear-probe and kNN accuracy for the main and the alternate label, with chance marked."""
    import numpy as np

    names = ["main", "alt"]
    x = np.arange(2)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.bar(x - 0.2, [metrics[f"probe_{n}"] for n in names], 0.4, label="linear probe")
    if all(f"knn_{n}" in metrics for n in names):
        ax.bar(x + 0.2, [metrics[f"knn_{n}"] for n in names], 0.4, label="kNN")
    for xi, n in zip(x, names):
        ax.hlines(metrics[f"chance_{n}"], xi - 0.4, xi + 0.4, colors="k", linestyles=":", label="chance" if n == "main" else None)
    ax.set_xticks(x, ["main label", "alternate label"])
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
