"""A panel of views the shape oracle calls destroyed and kept, for the docs (issue 19): for each run given,
one view of the run's own kind per test item, read by the run's cached overlay oracle; then 12 views it reads
wrong although it reads the clean image right (destroyed) and 12 it reads right (kept), each beside its
clean image and titled with the oracle's reading.

    python scripts/oracle_panel.py docs/oracle_panel.png \\
        runs/study19/views-expert__overlay_opacity-1.0__seed-0 \\
        runs/study19/views-viewmaker__overlay_opacity-1.0__seed-0
"""
from __future__ import annotations

import sys

import matplotlib.pyplot as plt
import torch

from featdrop import rundir
from featdrop.data import records
from featdrop.oracles import store
from featdrop.train import load_run
from featdrop.train.monitor import one_view
from featdrop.views.expert import CIFAR_MEAN, CIFAR_STD

SHOW = 12


def pixels(x):
    """CIFAR-normalised (3, 32, 32) → (32, 32, 3) in [0, 1] for imshow."""
    return (x.cpu() * torch.tensor(CIFAR_STD)[:, None, None] + torch.tensor(CIFAR_MEAN)[:, None, None]) \
        .clamp(0, 1).permute(1, 2, 0).numpy()


def panel(run_dir: str, fig, row: int, rows: int):
    trainer = load_run(run_dir)
    oracle = store.for_run(trainer.cfg, trainer.data, trainer.device, say=lambda s: None, train=False)["alt"]
    test, names = trainer.data.test, records.get(trainer.cfg.overlay).alt_class_names()
    raw = test.images[:400]
    view = one_view(trainer, raw, torch.Generator().manual_seed(1))[0]
    clean = trainer.data.modality.clean(raw)
    before, after, y = oracle.read(clean), oracle.read(view), test.alt_labels[:400]
    kinds = {"destroyed": torch.nonzero((before == y) & (after != y)).flatten()[:SHOW],
             "kept": torch.nonzero((before == y) & (after == y)).flatten()[:SHOW]}
    for k, (kind, idx) in enumerate(kinds.items()):
        for j, i in enumerate(idx.tolist()):
            for m, (img, text) in enumerate(((clean[i], f"{names[int(y[i])]}"),
                                             (view[i], f"reads {names[int(after[i])]}"))):
                ax = fig.add_subplot(rows * 2, 2 * SHOW, (2 * row + k) * 2 * SHOW + 2 * j + m + 1)
                ax.imshow(pixels(img), interpolation="nearest")
                ax.set_title(text, fontsize=6, color="C3" if (m and kind == "destroyed") else "k")
                ax.axis("off")
        fig.text(0.005, 1 - (2 * row + k + 0.5) / (2 * rows), f"{trainer.cfg.views}\n{kind}", fontsize=8,
                 va="center")
    rate = ((before == y) & (after != y)).sum().item() / max(1, (before == y).sum().item())
    print(f"{run_dir}: of the first 400 test images, {rate:.3f} of the views read right when clean "
          f"are destroyed")


def main(figure: str, *run_dirs: str) -> None:
    fig = plt.figure(figsize=(2 * SHOW * 0.62, 2 * len(run_dirs) * 0.8 + 0.5))
    for row, run in enumerate(run_dirs):
        panel(run, fig, row, len(run_dirs))
    fig.suptitle("the shape oracle on one view per test image: clean image (true shape) and view (what the "
                 "oracle reads); red: destroyed", fontsize=8)
    fig.subplots_adjust(left=0.05, right=0.995, top=0.86, bottom=0.01, hspace=0.45, wspace=0.08)
    print(f"wrote {rundir.save_figure(fig, figure)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
