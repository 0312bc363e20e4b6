"""MoCo's momentum encoder and queue (He et al., "Momentum Contrast", CVPR 2020; MoCo-v2: Chen et al. 2020,
with the MLP head, τ 0.2 and SimCLR's views), as the IFM code trains it (Robinson et al., NeurIPS 2021:
``main_moco.py``, momentum 0.99 on ImageNet-100). The loss is ``featdrop.losses.moco``.

- key encoder θ_k: a copy of the query encoder θ_q, never trained by gradient; before each step
  θ_k ← m·θ_k + (1 − m)·θ_q (parameters only: its BatchNorm statistics are its own, as in MoCo);
- queue: the K most recent keys (normalised), the negatives of every query; after each step the batch's keys
  go in, the oldest come out (a ring buffer, ``ptr``);
- shuffled BN: MoCo shuffles the key batch across GPUs so that a query and its key never share BatchNorm
  statistics. The single-process equivalent (MoCo's CIFAR demo does the same): the key batch is shuffled and
  run through the key encoder in ``splits`` groups, each with its own statistics, then put back in order.
  Under torchrun each process shuffles its own keys, in ``splits`` / processes groups.

Everything here is state of the run: ``state_dict`` holds the key encoder, the queue, its pointer and the step
count (which seeds the shuffle), so a resumed run continues exactly.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class MomentumEncoder(nn.Module):
    """``MomentumEncoder(encoder, queue_size, dim, momentum, splits, seed)``: the key encoder and the queue.

    Args:
        encoder: the query encoder (copied; its ``forward`` gives the (B, dim) embedding).
        queue_size: K, the number of negatives kept.
        momentum: m of the key encoder's update (0.99 in the IFM command line; MoCo-v2's default 0.999).
        splits: groups of the shuffled key batch (the single-process equivalent of MoCo's 8 GPUs).
    """

    def __init__(self, encoder: nn.Module, queue_size: int, dim: int, momentum: float, splits: int = 8,
                 seed: int = 0):
        super().__init__()
        self.key_encoder = copy.deepcopy(encoder)
        self.key_encoder.requires_grad_(False)  # moved by the momentum update only
        self.momentum, self.splits, self.seed = momentum, splits, seed
        g = torch.Generator().manual_seed(seed * 31 + 7)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim, generator=g), dim=1))  # (K, D)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.count = 0  # = steps, kept on the host: the shuffle's seed without a device read

    @torch.no_grad()
    def update(self, encoder: nn.Module) -> None:
        """θ_k ← m·θ_k + (1 − m)·θ_q, parameter by parameter."""
        for k, q in zip(self.key_encoder.parameters(), encoder.parameters()):
            k.mul_(self.momentum).add_(q.detach(), alpha=1 - self.momentum)

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Keys (B, D) of the views x (B, C, S, S): the key encoder on the shuffled batch in ``splits``
        groups (BatchNorm statistics per group), in the batch's order again. No gradient reaches the key
        encoder; one reaches x when x carries it (a viewmaker's views)."""
        g = torch.Generator(device=x.device).manual_seed(self.seed * 1_000_003 + self.count)
        perm = torch.randperm(len(x), generator=g, device=x.device)
        groups = [part for part in torch.tensor_split(x[perm], min(self.splits, len(x))) if len(part)]
        shuffled = torch.cat([self.key_encoder(part) for part in groups])
        return shuffled[torch.argsort(perm)]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """The batch's keys (B, D) (every process's, under torchrun) replace the oldest in the queue."""
        n = len(keys)
        idx = (self.ptr + torch.arange(n, device=keys.device)) % len(self.queue)
        self.queue[idx] = F.normalize(keys.float(), dim=1)
        self.ptr.add_(n).remainder_(len(self.queue))
        self.steps.add_(1)
        self.count += 1

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        super()._load_from_state_dict(state, prefix, *args, **kwargs)
        if prefix + "steps" in state:
            self.count = int(state[prefix + "steps"])
