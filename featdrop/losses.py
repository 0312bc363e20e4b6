"""Contrastive losses on two batches of embeddings ``z1, z2 (B, D)``; L2 normalisation inside.

- ``nt_xent``: SimCLR's NT-Xent (Chen et al. 2020): 2B anchors, self-similarity masked, mean.
- ``reference_simclr``: the viewmaker/Feature-Dropout code's variant: view-1 anchors only, the
  self-similarity kept in the denominator, minus the constant log 2B.
- ``ifm``: implicit feature modification (Robinson et al. 2021): positive cosines −ε, negative
  cosines +ε before the temperature, combined as (L + α·L_ε)/(1 + α).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _logits(z1, z2, temperature, epsilon=0.0):
    """(2B, 2B) cosine logits with the self entries masked out and the positives at i ↔ i±B."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)      # (2B, D)
    sim = z @ z.t()                                          # (2B, 2B) cosines
    n = z1.shape[0]
    pos = torch.arange(2 * n, device=z.device).roll(n)       # index of each anchor's positive
    if epsilon:
        shift = torch.full_like(sim, epsilon)                # negatives move up by ε ...
        shift[torch.arange(2 * n), pos] = -epsilon           # ... the positive down by ε
        sim = sim + shift
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    return sim / temperature, pos


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    logits, pos = _logits(z1, z2, temperature)
    return F.cross_entropy(logits, pos)


def ifm(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.07, epsilon: float = 0.1,
        alpha: float = 1.0) -> torch.Tensor:
    """IFM on NT-Xent; ε = 0 gives exactly ``nt_xent``."""
    plain = nt_xent(z1, z2, temperature)
    logits, pos = _logits(z1, z2, temperature, epsilon)
    return (plain + alpha * F.cross_entropy(logits, pos)) / (1 + alpha)


def reference_simclr(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """ℓ_i = −s(z¹_i, z²_i)/τ + logsumexp_j{s(z¹_i, z¹_j)/τ, s(z¹_i, z²_j)/τ} − log 2B, mean over i."""
    a = F.normalize(z1.float(), dim=1)
    b = F.normalize(z2.float(), dim=1)
    n = a.shape[0]
    logits = torch.cat([a @ a.t(), a @ b.t()], dim=1) / temperature  # (B, 2B), self term included
    positive = (a * b).sum(1) / temperature
    return (torch.logsumexp(logits, dim=1) - positive - math.log(2 * n)).mean()


def contrastive_loss(name: str, z1, z2, temperature: float, ifm_epsilon: float = 0.1, ifm_alpha: float = 1.0):
    if name == "simclr":
        return nt_xent(z1, z2, temperature)
    if name == "reference":
        return reference_simclr(z1, z2, temperature)
    if name == "ifm":
        return ifm(z1, z2, temperature, ifm_epsilon, ifm_alpha)
    raise ValueError(f"loss={name!r} is unknown: allowed simclr, reference, ifm")
