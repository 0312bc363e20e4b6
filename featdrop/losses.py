"""Contrastive losses on two batches of embeddings ``z1, z2 (B, D)``; L2 normalisation inside.

- ``nt_xent``: SimCLR's NT-Xent (Chen et al. 2020): 2B anchors, self-similarity masked, mean.
- ``reference_simclr``: the viewmaker/Feature-Dropout code's variant: view-1 anchors only, the
  self-similarity kept in the denominator, minus the constant log 2B.
- ``ifm``: implicit feature modification (Robinson et al. 2021): positive cosines −ε, negative
  cosines +ε before the temperature, combined as (L + α·L_ε)/(1 + α).
- ``moco``: MoCo's InfoNCE (He et al. 2020; v2: Chen et al. 2020): queries against their keys (from the
  momentum encoder, ``featdrop.moco``) with a queue of earlier keys as the negatives; with IFM as the IFM code
  applies it (its ``main_moco.py``): l_pos − ε, l_neg + ε, (L + α·L_ε)/(1 + α).

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
from dataclasses import dataclass
from typing import Callable

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


def moco(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2,
         epsilon: float = 0.0, alpha: float = 1.0) -> torch.Tensor:
    """Queries q (B, D) against their keys k (B, D) and the queue (K, D) of negatives, cosines:
    logits_i = [q_i·k_i, q_i·queue_j] / τ, target 0, mean over i; with IFM ε (cosine units) the positive
    moves down and the negatives up by ε, L = (L_0 + α·L_ε)/(1 + α), which is L_0 at ε = 0."""
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    l_pos = (q * k).sum(1, keepdim=True)                      # (B, 1)
    l_neg = q @ queue.float().t()                             # (B, K); the queue carries no gradient
    target = torch.zeros(len(q), dtype=torch.long, device=q.device)
    plain = F.cross_entropy(torch.cat([l_pos, l_neg], 1) / temperature, target)
    moved = F.cross_entropy(torch.cat([l_pos - epsilon, l_neg + epsilon], 1) / temperature, target)
    return (plain + alpha * moved) / (1 + alpha)


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


def supcon(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor,
           temperature: float = 0.5) -> torch.Tensor:
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


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                           smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy against (1 − ε)·one-hot + ε/K, mean over the batch (ε = 0.1 in Thanos)."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel MSE, mean over batch, channels and pixels; computed in float32 (the autoencoder's term)."""
    return F.mse_loss(recon.float(), target.float())


# ---------------------------------------------------------------------------- the objectives, one record each
@dataclass(frozen=True)
class Objective:
    """One value of the config field ``loss``, as the config and the trainer see it.

    ``term(z1, z2, labels, hp)`` is the contrastive term on the two views' embeddings (None: there is none),
    where ``hp`` carries the hyperparameters temperature, ifm_epsilon, ifm_alpha and spread_alpha (a Config
    does); with ``queue`` it is ``term(q, k, labels, hp, queue)``: queries, the momentum encoder's keys and
    the queue of negatives (``featdrop.moco``). Adding an objective is one entry here: config validation, the
    default τ and the trainer's heads all read this record."""
    term: Callable | None
    supervised: bool = False      # needs labels: the config's ``supervise`` must be set
    temperature: float = 0.07     # τ when the config leaves it None (0.07: the reference; 0.5: Thanos)
    ce_head: bool = False         # always trains a label-smoothed CE head (supcon/spread: with ce_weight > 0)
    decoder: bool = False         # reconstructs the clean input from the pooled features
    queue: bool = False           # a momentum key encoder and a queue of negatives (MoCo)
    mlp_head: bool = False        # the projection head's default (projection_head=None): MoCo-v2's MLP


OBJECTIVES: dict[str, Objective] = {
    "simclr": Objective(lambda z1, z2, y, hp: nt_xent(z1, z2, hp.temperature)),
    "reference": Objective(lambda z1, z2, y, hp: reference_simclr(z1, z2, hp.temperature)),
    "ifm": Objective(lambda z1, z2, y, hp: ifm(z1, z2, hp.temperature, hp.ifm_epsilon, hp.ifm_alpha)),
    "supcon": Objective(lambda z1, z2, y, hp: supcon(z1, z2, y, hp.temperature),
                        supervised=True, temperature=0.5),
    "spread": Objective(lambda z1, z2, y, hp: spread(z1, z2, y, hp.temperature, hp.spread_alpha),
                        supervised=True, temperature=0.5),
    # CE head + reconstruction, no contrast
    "ae": Objective(None, supervised=True, ce_head=True, decoder=True),
    # a CE head alone on both views: plain supervised training, the ceiling a probe is measured against
    "ce": Objective(None, supervised=True, ce_head=True),
    # MoCo-v2 (τ 0.2, MLP head); moco_ifm: with IFM's ε and α (ifm_epsilon, ifm_alpha), as the IFM code
    "moco": Objective(lambda q, k, y, hp, queue: moco(q, k, queue, hp.temperature),
                      temperature=0.2, queue=True, mlp_head=True),
    "moco_ifm": Objective(lambda q, k, y, hp, queue: moco(q, k, queue, hp.temperature, hp.ifm_epsilon,
                                                          hp.ifm_alpha),
                          temperature=0.2, queue=True, mlp_head=True),
}


def contrastive_loss(name: str, z1, z2, hp, labels: torch.Tensor | None = None,
                     queue: torch.Tensor | None = None) -> torch.Tensor:
    """The contrastive term of objective ``name`` on two views' embeddings (with ``queue``: queries and keys);
    hp: see ``Objective``."""
    objective = OBJECTIVES[name]
    if objective.term is None:
        raise ValueError(f"loss={name!r} has no contrastive term")
    if objective.supervised and labels is None:
        raise ValueError(f"loss={name!r} needs labels (set supervise)")
    if objective.queue:
        if queue is None:
            raise ValueError(f"loss={name!r} needs the momentum encoder's queue")
        return objective.term(z1, z2, labels, hp, queue)
    return objective.term(z1, z2, labels, hp)
