"""Expert (hand-designed) SimCLR views, batched with per-sample randomness, on any device.

The reference pipeline (feature_dropout.md §3.1; SimCLR's CIFAR recipe): RandomResizedCrop(32,
scale 0.2–1, ratio 3/4–4/3) → ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 → grayscale with p 0.2 →
Gaussian blur σ ~ U[0.1, 2] with p 0.5 → horizontal flip. torchvision draws one parameter set per
call, so here every op draws a tensor of parameters, one row per sample, from an explicit
``torch.Generator``. Crop and flip are one affine resampling (``grid_sample``); the blur is a
grouped convolution with one kernel per sample; the jitter ops run in a random order per sample,
as torchvision's ColorJitter does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CIFAR_MEAN = (0.491, 0.482, 0.446)
CIFAR_STD = (0.247, 0.243, 0.261)
GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
BLUR_KERNEL = 13              # covers ±3σ for σ ≤ 2


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CIFAR_MEAN, device=x.device, dtype=x.dtype)[:, None, None]
    std = torch.tensor(CIFAR_STD, device=x.device, dtype=x.dtype)[:, None, None]
    return (x - mean) / std


def _u(n, lo, hi, g, dev):
    return lo + (hi - lo) * torch.rand(n, generator=g, device=dev)


def crop_flip(x: torch.Tensor, g: torch.Generator, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), flip_p=0.5):
    """Random resized crop (area fraction ~ U(scale), log aspect ~ U(log ratio)) and flip, bilinear."""
    n, dev = x.shape[0], x.device
    w = h = torch.ones(n, device=dev)
    ok = torch.zeros(n, dtype=torch.bool, device=dev)
    for _ in range(10):  # torchvision's 10 tries; samples that never fit keep the whole image
        area = _u(n, *scale, g, dev)
        r = torch.exp(_u(n, math.log(ratio[0]), math.log(ratio[1]), g, dev))
        tw, th = torch.sqrt(area * r), torch.sqrt(area / r)
        fits = (tw <= 1) & (th <= 1) & ~ok
        w, h, ok = torch.where(fits, tw, w), torch.where(fits, th, h), ok | fits
    cx = _u(n, 0, 1, g, dev) * (1 - w) + w / 2  # crop centre in [0, 1] image coordinates
    cy = _u(n, 0, 1, g, dev) * (1 - h) + h / 2
    sign = torch.where(torch.rand(n, generator=g, device=dev) < flip_p, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = w * sign, 2 * cx - 1
    theta[:, 1, 1], theta[:, 1, 2] = h, 2 * cy - 1
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(GRAY, device=x.device, dtype=x.dtype)
    return (x * w[:, None, None]).sum(1, keepdim=True).expand_as(x)


def _blend(a, b, f):  # f·a + (1 − f)·b, clamped, with f (n,)
    return (b + f[:, None, None, None] * (a - b)).clamp(0, 1)


def shift_hue(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Rotate hue by h (n,) turns in HSV space, as torchvision's adjust_hue."""
    r, g_, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(maxc == r, (g_ - b) / safe, torch.where(maxc == g_, 2 + (b - r) / safe, 4 + (r - g_) / safe))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    hue = (hue + h[:, None, None]) % 1.0
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    v = maxc
    k = (5 - 2 * torch.arange(3, device=x.device, dtype=x.dtype))[None, :, None, None]  # n = 5, 3, 1 for R, G, B
    kk = (k + hue[:, None] * 6) % 6
    return v[:, None] - v[:, None] * sat[:, None] * (torch.minimum(kk, 4 - kk).clamp(0, 1))


def color_jitter(x: torch.Tensor, g: torch.Generator, b=0.4, c=0.4, s=0.4, hue=0.1, p=0.8):
    n, dev = x.shape[0], x.device
    factors = [_u(n, 1 - b, 1 + b, g, dev), _u(n, 1 - c, 1 + c, g, dev), _u(n, 1 - s, 1 + s, g, dev),
               _u(n, -hue, hue, g, dev)]
    apply = torch.rand(n, generator=g, device=dev) < p
    order = torch.argsort(torch.rand(n, 4, generator=g, device=dev), dim=1)  # a random op order per sample
    for step in range(4):
        for op in range(4):
            idx = torch.nonzero(apply & (order[:, step] == op)).flatten()
            if idx.numel() == 0:
                continue
            xi, f = x[idx], factors[op][idx]
            if op == 0:
                xi = _blend(xi, torch.zeros_like(xi), f)
            elif op == 1:
                xi = _blend(xi, grayscale(xi).mean(dim=(1, 2, 3), keepdim=True).expand_as(xi), f)
            elif op == 2:
                xi = _blend(xi, grayscale(xi), f)
            else:
                xi = shift_hue(xi, f)
            x = x.index_copy(0, idx, xi)
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each sample with its own σ (n,): separable, reflect padding, one grouped conv per axis."""
    n, ch, hgt, wid = x.shape
    t = torch.arange(BLUR_KERNEL, device=x.device, dtype=x.dtype) - BLUR_KERNEL // 2
    k = torch.exp(-0.5 * (t[None] / sigma[:, None].to(x.dtype)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # (n·ch, K)
    pad = BLUR_KERNEL // 2
    y = F.pad(x.reshape(1, n * ch, hgt, wid), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k[:, None, :, None], groups=n * ch)
    y = F.conv2d(y, k[:, None, None, :], groups=n * ch)
    return y.reshape(n, ch, hgt, wid)


def expert_views(x: torch.Tensor, g: torch.Generator, *, jitter_p=0.8, gray_p=0.2, blur_p=0.5,
                 blur_sigma=(0.1, 2.0), scale=(0.2, 1.0), flip_p=0.5) -> torch.Tensor:
    """One view per sample of ``x (B, 3, H, W)`` in [0, 1]; the result stays in [0, 1]."""
    n, dev = x.shape[0], x.device
    x = crop_flip(x, g, scale=scale, flip_p=flip_p).clamp(0, 1)
    x = color_jitter(x, g, p=jitter_p)
    gray = torch.rand(n, generator=g, device=dev) < gray_p
    x = torch.where(gray[:, None, None, None], grayscale(x), x)
    sigma = _u(n, *blur_sigma, g, dev)
    blur = torch.nonzero(torch.rand(n, generator=g, device=dev) < blur_p).flatten()
    if blur.numel():
        x = x.index_copy(0, blur, gaussian_blur(x[blur], sigma[blur]))
    return x
