"""Health of the contrastive game, measured every epoch: is the task still hard, and what do the views drop?

- ``positive_accuracy``: the fraction of the 2B anchors whose most similar other embedding is their
  positive. Near 1 the instance-discrimination task is solved and NT-Xent's gradients vanish (the
  collapse seen on the GPU, issue 11).
- ``dropped_fraction``: feature dropout, measured (Tamkin et al., "Feature Dropout", NeurIPS 2023):
  of the items whose clean input a probe labels correctly, the fraction whose view it gets wrong.
- ``overlay_budget_share``: the share of a viewmaker perturbation's L1 mass Σ|δ| that falls on the
  overlay's pixels; the overlay's share of the image's area is its chance level.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def positive_accuracy(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """z1, z2 (B, D) → 0-d tensor: over the 2B anchors, how often the nearest (cosine) of the other
    2B − 1 embeddings is the anchor's positive. Stays on the device (no host sync)."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)          # (2B, D)
    n = z1.shape[0]
    sim = (z @ z.t()).fill_diagonal_(float("-inf"))               # self excluded
    pos = torch.arange(2 * n, device=z.device).roll(n)            # i ↔ i ± B
    return (sim.argmax(1) == pos).float().mean()


def dropped_fraction(clean_pred: torch.Tensor, view_pred: torch.Tensor, y: torch.Tensor) -> float:
    """Of the items whose clean prediction is right, the fraction whose view's prediction is wrong
    (NaN when the probe gets no clean item right)."""
    clean_ok = clean_pred == y
    n = int(clean_ok.sum())
    return float(((view_pred != y) & clean_ok).sum()) / n if n else float("nan")


def overlay_budget_share(delta: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    """delta (N, C, H, W), masks bool (N, H, W) → (Σ|δ| on the mask / Σ|δ|, the mask's share of the
    pixels). The first equals the second for a perturbation spread evenly over the image."""
    mass = delta.float().abs().sum(1)                              # (N, H, W): L1 mass per pixel
    m = masks.to(mass.dtype)
    return float((mass * m).sum() / mass.sum().clamp_min(1e-12)), float(m.mean())
