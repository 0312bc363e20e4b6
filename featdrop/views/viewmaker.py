"""Viewmaker network (Tamkin, Wu, Goodman, "Viewmaker Networks", ICLR 2021).

A Johnson-style image-to-image network with a uniform-noise channel concatenated at the input and
before each residual block, instance norm and reflection padding. Its raw output y becomes an
additive perturbation on the L1 sphere, per example:

    δ = ε · tanh(y) / (mean_{c,h,w} |tanh(y)| + 1e-4)      # mean |δ| = ε, the distortion budget

and the view is x + δ (optionally clamped to the data range).

The noise channels are drawn by ``draw_noise`` (from an explicit generator) and passed in as tensors,
so the network itself holds no generator: ``torch.compile`` traces it without graph breaks. Noise
and instance norm are per example, so the two views of a batch can be made in one call on the
stacked 2B batch: the same distribution as two separate calls, half the kernel launches.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .draws import uniform


def conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(k // 2), nn.Conv2d(cin, cout, k, stride))


def conv_in_relu(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(conv(cin, cout, k, stride), nn.InstanceNorm2d(cout, affine=True),
                         nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(conv_in_relu(c, c, 3), conv(c, c, 3), nn.InstanceNorm2d(c, affine=True))

    def forward(self, x):
        return x + self.body(x)  # no activation after the add (reference)


class Viewmaker(nn.Module):
    """``Viewmaker(in_channels, budget)``; ``forward(x)`` returns a view of ``x (B, C, S, S)``.

    ``width`` is the first conv's channel count (reference 32; the stages use width, 2·width,
    4·width). ``clamp`` = (lo, hi) clamps the view; None leaves it unclamped (reference default).
    """

    def __init__(self, in_channels: int, budget: float, num_res_blocks: int = 3, width: int = 32,
                 clamp: tuple[float, float] | None = None):
        super().__init__()
        if budget <= 0:
            raise ValueError(f"budget={budget!r} is invalid: allowed a positive number")
        self.budget, self.clamp = budget, clamp
        w = width
        self.stem = nn.Sequential(conv_in_relu(in_channels + 1, w, 9), conv_in_relu(w, 2 * w, 3, 2),
                                  conv_in_relu(2 * w, 4 * w, 3, 2))
        # Block i sees 4w + i + 1 channels: one fresh noise channel is appended before each block.
        self.blocks = nn.ModuleList(ResidualBlock(4 * w + i + 1) for i in range(num_res_blocks))
        c = 4 * w + num_res_blocks
        self.decoder = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv_in_relu(c, 2 * w, 3),
                                     nn.Upsample(scale_factor=2, mode="nearest"), conv_in_relu(2 * w, w, 3),
                                     conv(w, in_channels, 9))

    def draw_noise(self, x: torch.Tensor, generator=None) -> list[torch.Tensor]:
        """U[0, 1) noise channels for ``x (B, C, S, S)``: one (B, 1, S, S) at the input (square, as the
        reference), then one (B, 1, S/4, S/4) before each residual block. ``generator``: a torch.Generator,
        or the Rows of a global batch this process holds (``featdrop.views.draws``)."""
        b, s = x.shape[0], x.shape[-1]
        h = s
        for _ in range(2):  # the stem's two stride-2 convs (kernel 3, reflection pad 1)
            h = (h - 1) // 2 + 1
        shapes = [(b, 1, s, s)] + [(b, 1, h, h)] * len(self.blocks)
        return [uniform(generator, *shape, device=x.device, dtype=x.dtype) for shape in shapes]

    def perturbation(self, x: torch.Tensor, generator: torch.Generator | None = None,
                     noise: list[torch.Tensor] | None = None, budget: float | None = None) -> torch.Tensor:
        """δ with per-example mean |δ| = ε, shape of x; ``noise`` from ``draw_noise`` (else drawn here);
        ``budget``: ε for this call only (None: the network's own), so the view explorer can show other
        budgets without changing a trained model."""
        if noise is None:
            noise = self.draw_noise(x, generator)
        h = self.stem(torch.cat([x, noise[0].to(x.dtype)], 1))
        for block, n in zip(self.blocks, noise[1:]):
            h = block(torch.cat([h, n.to(h.dtype)], 1))
        y = self.decoder(h)
        d0 = torch.tanh(y.float())
        scale = d0.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-4
        eps = self.budget if budget is None else budget
        return (eps * d0 / scale).to(x.dtype)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        view = x + self.perturbation(x, generator, noise)
        return view.clamp(*self.clamp) if self.clamp is not None else view
