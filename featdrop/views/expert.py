"""Expert (hand-designed) SimCLR views, batched with per-sample randomness, on any device.

The reference pipeline (feature_dropout.md §3.1; SimCLR's CIFAR recipe): RandomResizedCrop(32,
scale 0.2–1, ratio 3/4–4/3) → ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, ops in random order →
grayscale with p 0.2 → Gaussian blur σ ~ U[0.1, 2] with p 0.5 → horizontal flip. torchvision draws
one parameter set per call; here every op draws one row of parameters per sample from an explicit
``torch.Generator`` (or the rows of a global batch a process holds: ``featdrop.views.draws``).

Every op is linear, which makes the batch cheap:
- crop, flip and blur are separable spatial maps: per sample, one (H, H) matrix for the rows and one
  (W, W) for the columns, so the spatial part of a view is ``rows @ x @ colsᵀ``;
- brightness, contrast, saturation, hue and grayscale are affine colour maps, composed per sample
  (in that sample's random order) into one 3×3 matrix and offset.
A blur (weights summing to one) commutes with a per-pixel affine map, so the view is
``clamp(A · (rows @ x @ colsᵀ) + t, 0, 1)``.

Deviations from torchvision, by design: no clamping between the jitter ops (one clamp at the end),
and the hue jitter is a rotation of RGB space about the grey axis (a linear map) rather than a shift
of the HSV hue angle. For |h| ≤ 0.1 turns it moves colours the same way; on random pixels its mean
distance to torchvision's result is about 0.04 (no shift at all: 0.056).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .draws import uniform

CIFAR_MEAN = (0.491, 0.482, 0.446)
CIFAR_STD = (0.247, 0.243, 0.261)
GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, torchvision's rgb_to_grayscale constants
BLUR_KERNEL = 13              # covers ±3σ for σ ≤ 2


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CIFAR_MEAN, device=x.device, dtype=x.dtype)[:, None, None]
    std = torch.tensor(CIFAR_STD, device=x.device, dtype=x.dtype)[:, None, None]
    return (x - mean) / std


def _u(n, lo, hi, g, dev):
    return lo + (hi - lo) * uniform(g, n, device=dev)


# ------------------------------------------------------------------------------- spatial maps
def interp_matrix(start, length, size: int, flip=None) -> torch.Tensor:
    """Bilinear resampling as matrices (n, size, size): row i holds the weights output pixel i gives
    the input pixels, for a crop [start, start + length) (fractions of the side), optionally mirrored.
    Equals grid_sample(bilinear, align_corners=False) on a crop inside the image."""
    n, dev = start.shape[0], start.device
    i = torch.arange(size, device=dev, dtype=start.dtype)
    if flip is not None:  # mirrored output: pixel i reads where pixel size-1-i would have
        i = torch.where(flip[:, None], size - 1 - i[None], i[None])
    src = ((start[:, None] + (i + 0.5) / size * length[:, None]) * size - 0.5).clamp(0, size - 1)
    lo = src.floor().long().clamp(max=size - 2)
    frac = src - lo
    m = torch.zeros(n, size, size, device=dev, dtype=start.dtype)
    m.scatter_add_(2, lo[..., None], (1 - frac)[..., None])
    m.scatter_add_(2, (lo + 1)[..., None], frac[..., None])
    return m


def blur_matrix(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """(n, size, size) matrices of a Gaussian blur with reflect padding, one σ per sample."""
    t = torch.arange(BLUR_KERNEL, device=sigma.device) - BLUR_KERNEL // 2
    k = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)                                     # (n, K)
    src = torch.arange(size, device=sigma.device)[:, None] + t[None]   # (size, K) source pixel
    src = torch.where(src < 0, -src, torch.where(src >= size, 2 * (size - 1) - src, src))  # reflect
    return torch.einsum("nk,iks->nis", k, F.one_hot(src, size).to(k.dtype))


def crop_params(n, g, dev, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), tries: int = 10):
    """torchvision's RandomResizedCrop draw: area ~ U(scale), log aspect ~ U(log ratio), the first of
    10 tries that fits, else the whole image. Returns x0, y0, w, h as fractions of the side, (n,) each."""
    area = scale[0] + (scale[1] - scale[0]) * uniform(g, n, tries, device=dev)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * uniform(g, n, tries, device=dev)
    tw, th = torch.sqrt(area * torch.exp(log_r)), torch.sqrt(area * torch.exp(-log_r))
    fits = (tw <= 1) & (th <= 1)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # index of the first fitting try
    any_fit = fits.any(1)
    w = torch.where(any_fit, tw.gather(1, first)[:, 0], torch.ones(n, device=dev))
    h = torch.where(any_fit, th.gather(1, first)[:, 0], torch.ones(n, device=dev))
    return _u(n, 0, 1, g, dev) * (1 - w), _u(n, 0, 1, g, dev) * (1 - h), w, h


def apply_maps(x, rows, cols, A, t, lo=0.0, hi=1.0):
    """clamp(A · (rows @ x @ colsᵀ) + t, lo, hi) for x (n, C, H, W), rows (n, H, H), cols (n, W, W),
    A (n, C, C), t (n, C); lo, hi scalars or (C,). Colour and spatial maps act on different axes, so
    they commute; mixing the colours first lets the column map run as one (n, C·H, W) @ (n, W, W)."""
    n, c, hgt, wid = x.shape
    z = (A @ x.reshape(n, c, hgt * wid)).view(n, c * hgt, wid) @ cols.transpose(1, 2)
    z = rows[:, None] @ z.view(n, c, hgt, wid)
    z = z.add_(t[:, :, None, None])
    if torch.is_tensor(lo):
        return torch.clamp(z, lo[:, None, None], hi[:, None, None])
    return z.clamp_(lo, hi)


# -------------------------------------------------------------------------------- colour maps
def _eye(n, dev):
    return torch.eye(3, device=dev).expand(n, 3, 3)


def gray_matrix(n, dev):
    """(n, 3, 3): every output channel becomes the luma gᵀx."""
    return torch.outer(torch.ones(3, device=dev), torch.tensor(GRAY, device=dev)).expand(n, 3, 3)


def hue_matrix(h: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) rotation of RGB space by h turns about the grey axis (1, 1, 1)/√3 (Rodrigues)."""
    theta = 2 * math.pi * h
    k = torch.full((3,), 3 ** -0.5, device=h.device)
    # cross-product matrix of k
    K = torch.tensor([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]], device=h.device) * k[0]
    eye = torch.eye(3, device=h.device)
    return eye + torch.sin(theta)[:, None, None] * K + (1 - torch.cos(theta))[:, None, None] * (K @ K)


def jitter_affine(mean_rgb, g, b=0.4, c=0.4, s=0.4, hue=0.1, p=0.8):
    """ColorJitter as an affine map per sample: returns A (n, 3, 3), t (n, 3) with y = A x + t.

    ``mean_rgb (n, 3)``: each image's mean colour, for the contrast op (which blends towards the
    mean grey level of the image as it stands when the op runs)."""
    n, dev = mean_rgb.shape[0], mean_rgb.device
    fb, fc, fs = _u(n, 1 - b, 1 + b, g, dev), _u(n, 1 - c, 1 + c, g, dev), _u(n, 1 - s, 1 + s, g, dev)
    fh = _u(n, -hue, hue, g, dev)
    apply = uniform(g, n, device=dev) < p
    order = torch.argsort(uniform(g, n, 4, device=dev), dim=1)  # random op order per sample
    eye, gray = _eye(n, dev), gray_matrix(n, dev)
    luma = torch.tensor(GRAY, device=dev)
    A, t = eye.clone(), torch.zeros(n, 3, device=dev)
    hue_m = hue_matrix(fh)
    sat_m = fs[:, None, None] * eye + (1 - fs[:, None, None]) * gray
    for step in range(4):
        op = torch.where(apply, order[:, step], torch.full_like(order[:, step], -1))[:, None, None]
        # brightness: y·f;  contrast: f·y + (1 − f)·mean grey;  saturation: f·y + (1 − f)·grey(y);  hue
        grey_level = ((A @ mean_rgb[..., None])[..., 0] + t) @ luma          # (n,)
        M = torch.where(op == 0, fb[:, None, None] * eye,
            torch.where(op == 1, fc[:, None, None] * eye,
            torch.where(op == 2, sat_m, torch.where(op == 3, hue_m, eye))))
        offset = torch.where(op[:, :, 0] == 1, ((1 - fc) * grey_level)[:, None].expand(n, 3),
                             torch.zeros_like(t))
        A, t = M @ A, (M @ t[..., None])[..., 0] + offset
    return A, t


# ------------------------------------------------------------------------------------ the view
def expert_views(x: torch.Tensor, g: torch.Generator, *, jitter_p=0.8, gray_p=0.2, blur_p=0.5,
                 blur_sigma=(0.1, 2.0), scale=(0.2, 1.0), flip_p=0.5, in_scale: float = 1.0,
                 normalized: bool = False, crop=None) -> torch.Tensor:
    """One view per sample of ``x (B, 3, H, W)``, where ``x · in_scale`` is in [0, 1].

    The view is in [0, 1], or CIFAR-normalised when ``normalized`` (folded into the same affine map
    and clamp, so a uint8 batch becomes encoder input in one pass: ``in_scale=1/255``). ``crop``: the
    crop windows (x0, y0, w, h) as fractions of the side, (B,) each, instead of RandomResizedCrop's draw
    (the label oracles use crops that keep the overlay)."""
    n, dev, (hgt, wid) = x.shape[0], x.device, x.shape[2:]
    x0, y0, w, h = crop_params(n, g, dev, scale) if crop is None else crop
    flip = uniform(g, n, device=dev) < flip_p
    rows, cols = interp_matrix(y0, h, hgt), interp_matrix(x0, w, wid, flip)
    sigma = _u(n, *blur_sigma, g, dev)
    blur = uniform(g, n, device=dev) < blur_p
    rows = torch.where(blur[:, None, None], blur_matrix(sigma, hgt) @ rows, rows)
    cols = torch.where(blur[:, None, None], blur_matrix(sigma, wid) @ cols, cols)
    # each view's mean colour, for the contrast op: the crop's mean = (row weights)ᵀ x (column weights)
    mean_rgb = torch.einsum("nh,nchw,nw->nc", rows.mean(1), x, cols.mean(1)).float() * in_scale
    A, t = jitter_affine(mean_rgb, g, p=jitter_p)
    to_gray = uniform(g, n, device=dev) < gray_p
    G = gray_matrix(n, dev)
    A = torch.where(to_gray[:, None, None], G @ A, A) * in_scale
    t = torch.where(to_gray[:, None], (G @ t[..., None])[..., 0], t)
    lo, hi = 0.0, 1.0
    if normalized:  # (clamp(y, 0, 1) − μ)/σ = clamp((y − μ)/σ, −μ/σ, (1 − μ)/σ)
        mu, sd = torch.tensor(CIFAR_MEAN, device=dev), torch.tensor(CIFAR_STD, device=dev)
        A, t = A / sd[:, None], (t - mu) / sd
        lo, hi = (-mu / sd).to(x.dtype), ((1 - mu) / sd).to(x.dtype)
    return apply_maps(x, rows.to(x.dtype), cols.to(x.dtype), A.to(x.dtype), t.to(x.dtype), lo, hi)
