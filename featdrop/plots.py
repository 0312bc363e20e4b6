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
    img = img.detach().float().cpu()
    if img.max() > 1.5:
        img = img / 255
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
