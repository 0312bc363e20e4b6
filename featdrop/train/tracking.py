"""Experiment trackers: TensorBoard or Weights & Biases, chosen by the config field ``tracker``.

Every epoch: every scalar of history.jsonl. Every few epochs: a grid of views with their perturbations.
At the end: the embedding map's features in TensorBoard's projector with both labels as metadata, and the
config with the final metrics as hparams, so that ``tensorboard --logdir runs/grid`` compares the cells of a
grid on one page. TensorBoard writes ``<out_dir>/tensorboard/``; W&B (as the reference did, ``pip install -e
".[wandb]"``) runs offline unless WANDB_MODE says otherwise, into ``<out_dir>/wandb/``.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from pathlib import Path

import torch

from ..errors import ConfigError
from .figures import draw_views

VIEWS_EVERY = 5   # epochs between view grids (and the last epoch)


def _scalars(row: dict) -> dict:
    return {k: float(v) for k, v in row.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and k != "epoch"}


def _hparams(cfg) -> dict:
    """The config as hparams: TensorBoard takes numbers, strings and bools; None becomes 'None'."""
    return {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k,
            v in dataclasses.asdict(cfg).items()}


class TensorBoard:
    def __init__(self, cfg):
        from torch.utils.tensorboard import SummaryWriter

        self.cfg = cfg
        self.writer = SummaryWriter(log_dir=str(Path(cfg.out_dir) / "tensorboard"))

    def epoch(self, row: dict) -> None:
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def views(self, grid: torch.Tensor, epoch: int) -> None:
        """``grid`` (3, H, W) in [0, 1]: originals, views and perturbations, one example per row."""
        self.writer.add_image("views", grid, epoch)

    def end(self, features, labels: dict, names: dict, metrics: dict) -> None:
        metadata = [[names[k][int(y)] for k, y in zip(labels, ys)] for ys in zip(*labels.values())]
        self.writer.add_embedding(features, metadata=metadata, metadata_header=list(labels), tag="features",
                                  global_step=self.cfg.epochs)
        self.writer.add_hparams(_hparams(self.cfg), {f"final/{k}": v for k, v in _scalars(metrics).items()},
                                run_name=".")
        self.writer.close()


class WandB:
    def __init__(self, cfg):
        try:
            import wandb
        except ImportError:
            raise ConfigError("config field 'tracker' = 'wandb' needs the wandb package: pip install -e "
                              "'.[wandb]' (or use tracker='tensorboard')") from None
        self.wandb = wandb
        os.environ.setdefault("WANDB_MODE", "offline")  # nothing leaves the machine unless you ask
        self.run = wandb.init(project="featdrop", name=Path(cfg.out_dir).name, dir=str(cfg.out_dir),
                              config=_hparams(cfg), reinit="finish_previous")

    def epoch(self, row: dict) -> None:
        self.run.log(_scalars(row), step=row["epoch"])

    def views(self, grid: torch.Tensor, epoch: int) -> None:
        self.run.log({"views": self.wandb.Image(grid.permute(1, 2, 0).numpy())}, step=epoch)

    def end(self, features, labels: dict, names: dict, metrics: dict) -> None:
        self.run.summary.update(_scalars(metrics))
        self.run.finish()


def make(cfg):
    """The tracker the config asks for, or None."""
    if cfg.tracker is None:
        return None
    return {"tensorboard": TensorBoard, "wandb": WandB}[cfg.tracker](cfg)


def view_grid(trainer, epoch: int, n: int = 4):
    """(3, H, W) in [0, 1]: rows of a clean test image, one view and (viewmaker) its perturbation ×5, from a
    generator seeded by the epoch, so the grids of two epochs show the same images."""
    m, raw = trainer.data.modality, trainer.data.test.images[:n]
    outs, deltas, _ = draw_views(trainer, raw, 1, torch.Generator(device=raw.device).manual_seed(epoch))
    base = m.base(raw).float()
    cols = [base, outs[0].float()] + ([0.5 + 5 * deltas[0].float()] if deltas is not None else [])
    if m.audio:  # log-mels: scale each to [0, 1] for display, one channel to three
        cols = [(c - c.amin()) / (c.amax() - c.amin()).clamp_min(1e-6) for c in cols]
        cols = [c.expand(-1, 3, -1, -1) for c in cols]
    rows = torch.cat([torch.cat(list(r), dim=2) for r in zip(*cols)], dim=1)  # (3, n·H, cols·W)
    return rows.clamp(0, 1).cpu()
