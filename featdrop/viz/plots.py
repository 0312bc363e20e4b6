"""One run's figures: example inputs with both labels, loss curves with the game's health, views with
their perturbations, probe bars. Every function returns a matplotlib Figure; ``rundir.save_figure`` saves.
Class names come from the overlay's record (``featdrop.data.records``), the noise names from the config."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import rundir
from ..data import records
from ..views.audio import LogMel


def _to_hwc(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 or float in [0, 1] → (H, W, 3) float in [0, 1] for imshow."""
    img = img.detach().cpu()
    img = img.float() / 255 if img.dtype == torch.uint8 else img.float()
    return img.clamp(0, 1).permute(1, 2, 0).numpy()


def gallery(images: torch.Tensor, labels: torch.Tensor, alt_labels: torch.Tensor, overlay: str,
            rows: int = 4, cols: int = 8, class_names: tuple | None = None):
    """Grid of examples, each titled with its main label and its alternate (overlay) label. ``class_names``:
    the main label's (default: the overlay record's, CIFAR-10's for images)."""
    record = records.get(overlay)
    main_names, alt_names = class_names or record.main_names, record.alt_class_names()
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 2.0 * rows + 0.4))
    for i, ax in enumerate(np.asarray(axes).flat):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(_to_hwc(images[i]), interpolation="nearest")
        alt = alt_names[int(alt_labels[i])] if record.has_alt_label() else ""
        ax.set_title(f"{main_names[int(labels[i])]}\n{alt}", fontsize=8)
    fig.suptitle(f"overlay = {overlay}: title = main label / alternate label", fontsize=10)
    fig.tight_layout(h_pad=1.2)  # two-line titles: room between the rows
    return fig


# The viewmaker step's number, one sign wherever it is shown (the epoch line, the loss curves): the loss L
# on the views of the viewmaker's step, which the viewmaker maximises. history.jsonl stores the viewmaker's
# own objective, viewmaker_loss = −L (it minimises −L); VM_STEP_LOSS is −viewmaker_loss.
VM_STEP_LOSS = "vm_step_loss"
VM_STEP_LOSS_MEANS = "L on the viewmaker's step (it maximises L)"


def vm_step_loss(row: dict) -> float:
    """L on the viewmaker's step, from a history row (which stores viewmaker_loss = −L)."""
    return -row["viewmaker_loss"]


def _values(history, key):
    """A history column as floats, None (a label the run does not have) and absent as NaN."""
    return [np.nan if r.get(key) is None else r[key] for r in history]


def loss_curves(history: list[dict], chance: dict | None = None):
    """Per epoch: the contrastive loss (and the viewmaker's), the kNN monitor with each label's chance
    (``chance``: {"main": .., "alt": ..}), and the game's health (positive accuracy, the fraction of views
    whose label the oracles read destroyed, or the encoder's probe reads dropped, the viewmaker's budget
    share on the overlay beside the overlay's area share). A label the run does not have is left out."""
    ep = np.array([r["epoch"] for r in history])
    fig, (ax, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.5))
    ax.plot(ep, [r["loss"] for r in history], "o-", label="encoder loss")
    if "viewmaker_loss" in history[0]:
        ax.plot(ep, [vm_step_loss(r) for r in history], "s--", label=f"{VM_STEP_LOSS}: {VM_STEP_LOSS_MEANS}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    for i, (key, label) in enumerate((("main", "main label"), ("alt", "alternate label"))):
        values = _values(history, f"knn_{key}")
        if not np.isnan(values).all():
            ax2.plot(ep, values, "os"[i] + "-", color=f"C{i}", label=label)
            if chance and chance.get(key) is not None:
                ax2.axhline(chance[key], color=f"C{i}", linestyle=":", linewidth=1, label=f"chance, {label}")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("kNN accuracy (monitor)")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=8)
    curves = (("pos_acc", "positive found (pos_acc)", "o-"),
              ("alt_destroyed", "views destroying the alt label (oracle)", "s-"),
              ("main_destroyed", "views destroying the main label (oracle)", "^-"),
              ("alt_dropped", "views the encoder's probe misreads: alt", "s:"),
              ("main_dropped", "views the encoder's probe misreads: main", "^:"),
              ("overlay_budget_share", "share of |δ| on the overlay", "D-"),
              ("overlay_area_share", "overlay's share of the area", "k:"))
    for key, label, style in curves:
        if not np.isnan(_values(history, key)).all():
            ax3.plot(ep, _values(history, key), style, label=label, markersize=4)
    ax3.set_xlabel("epoch")
    ax3.set_ylabel("fraction")
    ax3.set_ylim(0, 1.02)
    ax3.set_title("game health", fontsize=9)
    ax3.legend(fontsize=6)
    fig.tight_layout()
    return fig


def view_grid(originals: torch.Tensor, views: list[torch.Tensor],
              perturbations: list[torch.Tensor] | None = None,
              titles: list[list[str]] | None = None, amplify: float = 5.0, spectrogram: bool = False,
              title: str = ""):
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
        for ax, (img, label) in zip(axes[i], panels):
            if spectrogram:
                ax.imshow(img[0].detach().float().cpu().numpy(), origin="lower", aspect="auto", cmap="magma")
            else:
                ax.imshow(_to_hwc(img), interpolation="nearest")
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def probe_bars(metrics: dict, title: str = ""):
    """Linear-probe and kNN accuracy for the main, the alternate and (CIFAR-10) the coarse label, with
    chance marked. A label the run does not have (the alternate label of overlay "none": None, or an older
    run's constant label with chance 1.0) is left out."""
    labels = {"main": "main label", "alt": "alternate label", "coarse": "coarse label"}
    names = [n for n in labels if metrics.get(f"probe_{n}") is not None
             and not (n == "alt" and metrics.get("chance_alt") == 1.0)]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.5 + 1.5 * len(names), 3.5))
    ax.bar(x - 0.2, [metrics[f"probe_{n}"] for n in names], 0.4, label="linear probe")
    if all(f"knn_{n}" in metrics for n in names):
        ax.bar(x + 0.2, [metrics[f"knn_{n}"] for n in names], 0.4, label="kNN")
    for i, (xi, n) in enumerate(zip(x, names)):
        ax.hlines(metrics[f"chance_{n}"], xi - 0.4, xi + 0.4, colors="k", linestyles=":",
                  label="chance" if i == 0 else None)
    ax.set_xticks(x, [labels[n] for n in names])
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def spectrograms(split, n: int = 16, cols: int = 8):
    """Log-mel spectrograms (dB) of n items spread over the split (view 1), titled digit / noise type."""
    n = min(n, len(split))
    pick = torch.linspace(0, len(split) - 1, n).long().to(split.images.device)  # files are sorted by digit
    raw = split.images[pick]
    db = LogMel(raw.device)(raw[:, 0] if raw.dim() == 3 else raw)[:, 0].cpu()  # μ = 0, σ = 1: plain dB
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    names = split.noise_names or tuple(str(k) for k in range(int(split.alt_labels.max()) + 1))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(db[i].numpy(), origin="lower", aspect="auto", cmap="magma")
            j = int(pick[i])
            ax.set_title(f"digit {int(split.labels[j])}\n{names[int(split.alt_labels[j])]}", fontsize=8)
    fig.suptitle("log-mel spectrograms (64 mels × 64 frames, dB): spoken digit / background noise",
                 fontsize=10)
    fig.tight_layout()
    return fig


def spectrogram_panels(rows: list[list[tuple[torch.Tensor, str, str]]], title: str = ""):
    """Log-mels and perturbations of one clip, a row of panels per list of (tensor (1, F, T), title, kind):
    kind "logmel" (all on the first panel's colour scale, low bands at the bottom) or "delta" (a perturbation,
    blue − / red +, symmetric about 0)."""
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.3 * cols, 2.3 * len(rows) + 0.3), squeeze=False)
    first = rows[0][0][0][0].detach().float().cpu()
    lo, hi = first.min().item(), first.max().item()
    for ax in axes.flat:
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, (x, label, kind) in enumerate(row):
            x = x[0].detach().float().cpu().numpy()
            ax = axes[r, c]
            if kind == "delta":
                m = max(float(np.abs(x).max()), 1e-6)
                ax.imshow(x, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-m, vmax=m)
            else:
                ax.imshow(x, origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi)
            ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def show_in(out, fig, first: bool = False) -> None:
    """Show ``fig`` in the ipywidgets ``Output`` ``out``, replacing what it showed, and close it. The first
    picture goes straight into the widget's outputs instead of through output capture: papermill's client
    (nbclient) routes captured output and ``clear_output(wait=True)`` itself, and under load it twice waited
    forever on a kernel that had finished the widget's cell (the view and map explorers, fresh clones).
    Later pictures follow a user's clicks in JupyterLab, where capture is the ordinary way."""
    from IPython.display import display

    if first:
        out.outputs = ()
        out.append_display_data(fig)
    else:
        with out:
            out.clear_output(wait=True)
            display(fig)
    plt.close(fig)


def log_x_panel(ax, title: str, xlabel: str, zero_line: bool = False) -> None:
    """One panel of a study's figure against a log x axis (training length, noise volume): its title and
    label, and a zero line for a paired difference."""
    if zero_line:
        ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)


def study_figure_done(fig, axes, suptitle: str, path):
    """A study figure's legend (first panel), title and layout, saved to ``path``; returns the path."""
    axes[0].legend(fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return rundir.save_figure(fig, path)
