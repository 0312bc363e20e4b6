"""Contrastive losses on two batches of embeddings ``z1, z2 (B, D)``; L2 normalisation inside.

- ``nt_xent``: SimCLR's NT-Xent (Chen et al. 2020): 2B anchors, self-similarity masked, mean.
- ``reference_simclr``: the viewmaker/Feature-Dropout code's variant: view-1 anchors only, the
  self-similarity kept in the denominator, minus the constant log 2B.
- ``ifm``: implicit feature modification (Robinson et al. 2021): positive cosines −ε, negative
  cosines +ε before the temperature, combined as (L + α·L_ε)/(1 + α).

Supervised losses of "Perfectly Balanced" (Chen, Fu et al. 2022, Thanos), taking ``labels (B,)``.
σᵢⱼ = cos(zᵢ, z′ⱼ)/τ across the two views only, both directions; mean over the 2B anchors. P(i):
same-class entries of the other view (i′ among them); N(i): the rest.

- ``supcon``: SupCon as Thanos computes it, positives not pooled in the denominator:
  L_SC(i) = mean_{p∈P(i)} [−σᵢₚ + log(e^{σᵢₚ} + Σ_{n∈N(i)} e^{σᵢₙ})].
- ``class_conditional_nce``: InfoNCE with negatives from the anchor's own class only:
  L_cNCE(i) = −σᵢᵢ′ + log Σ_{p∈P(i)} e^{σᵢₚ}; it spreads each class instead of collapsing it.
- ``spread``: Thanos's L_spread = (1 − α)·L_SC + α·L_cNCE; α sets the degree of spread.
- ``smoothed_cross_entropy``: label-smoothed cross-entropy, the supervised head trained alongside.
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


def _cross_view(z1, z2, labels):
    """(2B, B) cross-view cosines and same-class mask: rows 0..B−1 are view-1 anchors against view 2,
    rows B..2B−1 view-2 anchors against view 1; each anchor's own other view sits at column i mod B."""
    a = F.normalize(z1.float(), dim=1)                        # (B, D)
    b = F.normalize(z2.float(), dim=1)                        # (B, D)
    s = a @ b.t()                                             # (B, B): s[i, j] = cos(z¹ᵢ, z²ⱼ)
    same = labels[:, None] == labels[None, :]                 # (B, B), symmetric
    return torch.cat([s, s.t()]), torch.cat([same, same])     # (2B, B) each


def supcon(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """L_SC(i) = mean_{p∈P(i)} [−σᵢₚ + log(e^{σᵢₚ} + Σ_{n∈N(i)} e^{σᵢₙ})], mean over 2B anchors."""
    cos, pos = _cross_view(z1, z2, labels)
    sim = cos / temperature                                   # σ, (2B, B)
    has_neg = (~pos).any(1, keepdim=True)                     # (2B, 1); False when the batch is one class
    neg = sim.masked_fill(pos, float("-inf")).masked_fill(~has_neg, 0.0)  # 0-fill keeps the grad finite
    lse_neg = torch.logsumexp(neg, 1, keepdim=True).masked_fill(~has_neg, float("-inf"))  # log Σ_N e^σ
    # −σ + log(e^σ + e^{lse_N}) = softplus(lse_N − σ): 0 when N(i) is empty
    per_pair = F.softplus(lse_neg - sim) * pos                # (2B, B), zero off P(i)
    return (per_pair.sum(1) / pos.sum(1)).mean()


def class_conditional_nce(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor,
                          temperature: float = 0.5) -> torch.Tensor:
    """L_cNCE(i) = −σᵢᵢ′ + log Σ_{p∈P(i)} e^{σᵢₚ}, mean over the 2B anchors."""
    cos, pos = _cross_view(z1, z2, labels)
    sim = cos / temperature                                   # σ, (2B, B)
    own = sim.diagonal().repeat(2)                            # σᵢᵢ′, (2B,): the diagonal of s and of sᵀ
    return (torch.logsumexp(sim.masked_fill(~pos, float("-inf")), 1) - own).mean()


def spread(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, temperature: float = 0.5,
           alpha: float = 0.5) -> torch.Tensor:
    """L_spread = (1 − α)·L_SC + α·L_cNCE (Thanos: a_lc = a_spread = 1, so α = 0.5)."""
    return ((1 - alpha) * supcon(z1, z2, labels, temperature)
            + alpha * class_conditional_nce(z1, z2, labels, temperature))


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy against (1 − ε)·one-hot + ε/K, mean over the batch (ε = 0.1 in Thanos)."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)


def contrastive_loss(name: str, z1, z2, temperature: float, ifm_epsilon: float = 0.1, ifm_alpha: float = 1.0,
                     labels: torch.Tensor | None = None, spread_alpha: float = 0.5):
    """The contrastive loss ``name`` on two views' embeddings; supcon and spread also take ``labels``."""
    if name == "simclr":
        return nt_xent(z1, z2, temperature)
    if name == "reference":
        return reference_simclr(z1, z2, temperature)
    if name == "ifm":
        return ifm(z1, z2, temperature, ifm_epsilon, ifm_alpha)
    if name in ("supcon", "spread") and labels is None:
        raise ValueError(f"loss={name!r} needs labels (set supervise)")
    if name == "supcon":
        return supcon(z1, z2, labels, temperature)
    if name == "spread":
        return spread(z1, z2, labels, temperature, spread_alpha)
    raise ValueError(f"loss={name!r} is unknown: allowed simclr, reference, ifm, supcon, spread")
