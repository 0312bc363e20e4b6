"""A reader: a small supervised CNN that reads one label from an encoder input, trained on perturbations that
leave that label visible, so that a miss on a view means the view destroyed the label, not that the reader
is brittle.

Image inputs are CIFAR-normalised 3×32×32 pixels; audio inputs are z-scored 1×64×64 log-mels (the encoder's
own inputs, so a run's views are read as they are). The label-preserving perturbations of an image are the
expert views' colour changes, blur and flips, with crops that keep the overlay (the whole shape, or one
whole copy of a digit or letter) or, for the photo's class, the expert views' own crops; then pixel noise
and random smooth blobs like a viewmaker's perturbation. Audio: narrow time and frequency masks, dB noise
and blobs.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..views import expert

READ_SIDE = 64  # the largest input side a reader reads at


class Reader(nn.Module):
    """Stages of two conv–BN–ReLU at 32, 16 and 8 px (2× max-pools between), one at 4 px, global average
    pool, linear: about 11 M multiply-adds for a 32×32 image, so that reading the monitor's 1,000 views every
    epoch stays cheap. Two convolutions before the first pool keep the 1-2 px strokes of a 10-px digit or
    a 12-px letter. 64×64 inputs (log-mels) start with a stride-2 conv."""

    def __init__(self, in_channels: int, num_classes: int, side: int = 32, widths=(16, 32, 64, 128)):
        super().__init__()
        layers, c = [], in_channels
        # larger images are read at 64 px (antialiased): the overlays keep their share of the image, so a
        # 64 px reader sees them as a 32 px one sees CIFAR-10's, at a fraction of the cost of 224 px
        self.read_side = READ_SIDE if side > READ_SIDE else None
        if side >= 64:
            layers += [nn.Conv2d(c, widths[0], 5, 2, 2, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
            c = widths[0]
        for i, w in enumerate(widths):
            last = i == len(widths) - 1
            for cin in ((c,) if last else (c, w)):
                layers += [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True)]
            if not last:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.body = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        if self.read_side is not None:
            x = F.interpolate(x, size=(self.read_side,) * 2, mode="bilinear", antialias=True,
                              align_corners=False)
        x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's and cuDNN's fast convolutions
        return self.head(self.body(x).mean(dim=(2, 3)))      # (B, classes) logits


# ---------------------------------------------------------------------------- label-preserving perturbations
def keep_boxes(masks: torch.Tensor, copies: int, g: torch.Generator) -> torch.Tensor:
    """(B, 4) boxes x0, x1, y0, y1 (pixels, end exclusive) that a crop must contain to keep the overlay:
    the whole mask, or with ``copies`` = 4 (one per quadrant) the mask of one random non-empty quadrant.
    An empty mask gives the whole image."""
    b, s = masks.shape[0], masks.shape[-1]
    m = masks.clone()
    if copies == 4:
        half = s // 2
        quad = torch.randint(0, 4, (b,), generator=g, device=g.device).to(m.device)
        ys = torch.arange(s, device=m.device)
        rows_in = (ys[None] >= half) == (quad[:, None] // 2 == 1)            # (B, S)
        cols_in = (ys[None] >= half) == (quad[:, None] % 2 == 1)
        one = m & rows_in[:, :, None] & cols_in[:, None, :]
        m = torch.where(one.flatten(1).any(1)[:, None, None], one, m)       # an empty quadrant: all copies
    rows, cols = m.any(2), m.any(1)                                          # (B, S) each

    def first(a):   # the first True index of each row, 0 for an empty row
        return torch.where(a.any(1), a.int().argmax(1), 0)

    def end(a):     # one past the last True index, S for an empty row
        return torch.where(a.any(1), s - a.flip(1).int().argmax(1), s)

    return torch.stack([first(cols), end(cols), first(rows), end(rows)], 1).float()


def keeping_crops(boxes: torch.Tensor, size: int, g: torch.Generator, min_side: float = 0.45,
                  near_full: float = 0.0, near_full_side: float = 0.85):
    """Crop windows (x0, y0, w, h), fractions of the side, each containing its box; sides uniform between
    the larger of the box and ``min_side`` (0.45: about RandomResizedCrop's smallest area, 0.2) and 1. A
    fraction ``near_full`` of them take sides of at least ``near_full_side`` instead: more of the scale of
    clean images and of viewmaker views, which are never cropped."""
    if near_full:
        wide = keeping_crops(boxes, size, g, min_side)
        near = keeping_crops(boxes, size, g, near_full_side)
        pick = torch.rand(len(boxes), generator=g, device=boxes.device) < near_full
        return tuple(torch.where(pick, a, b) for a, b in zip(near, wide))
    dev = boxes.device

    def axis(lo, hi):
        need = ((hi - lo) / size).clamp(min=min_side)
        side = need + torch.rand(len(lo), generator=g, device=dev) * (1 - need)
        start_lo = (hi / size - side).clamp(min=0)
        start_hi = torch.minimum(lo / size, 1 - side)
        room = (start_hi - start_lo).clamp(min=0)
        return start_lo + torch.rand(len(lo), generator=g, device=dev) * room, side

    x0, w = axis(boxes[:, 0], boxes[:, 1])
    y0, h = axis(boxes[:, 2], boxes[:, 3])
    return x0, y0, w, h


def blobs(shape, g: torch.Generator, device, amplitude: float = 0.25, p: float = 0.5) -> torch.Tensor:
    """A smooth random perturbation (B, C, S, S) like a viewmaker's: up to two Gaussian bumps of radius
    2-6 px (scaled with S), amplitude up to ``amplitude``, a random sign per channel; on a fraction p."""
    b, c, s = shape[0], shape[1], shape[-1]
    ar = torch.arange(s, device=device, dtype=torch.float32)
    out = torch.zeros(shape, device=device)
    for _ in range(2):
        cy, cx = (torch.rand(2, b, generator=g, device=device) * s)
        r = (2 + 4 * torch.rand(b, generator=g, device=device)) * s / 32
        d2 = (ar[None, :, None] - cy[:, None, None]) ** 2 + (ar[None, None, :] - cx[:, None, None]) ** 2
        bump = torch.exp(-d2 / (2 * r[:, None, None] ** 2))                 # (B, S, S)
        amp = amplitude * torch.rand(b, 1, generator=g, device=device)
        sign = torch.randint(0, 2, (b, c), generator=g, device=device) * 2 - 1
        out += (amp * sign)[:, :, None, None] * bump[:, None]
    on = torch.rand(b, generator=g, device=device) < p
    return out * on[:, None, None, None]


def image_views(x: torch.Tensor, g: torch.Generator, masks: torch.Tensor | None = None, copies: int = 1,
                noise: float = 0.04, near_full: float = 0.0) -> torch.Tensor:
    """Label-preserving views of uint8 images (B, 3, 32, 32) → CIFAR-normalised float. With ``masks`` (the
    overlay's pixels) the crops keep the overlay and the blur stays below σ = 1 px (the expert views' σ of up
    to 2 px makes a 10-px digit illegible); without (the photo's class), the expert views' own crops, which
    SimCLR takes as class-preserving. ``near_full``: see :func:`keeping_crops`."""
    n, s = x.shape[0], x.shape[-1]
    if masks is not None:
        crop, sigma = keeping_crops(keep_boxes(masks, copies, g), s, g, near_full=near_full), (0.1, 1.0)
    else:
        crop, sigma = expert.crop_params(n, g, x.device), (0.1, 2.0)
    v = expert.expert_views(x.float(), g, in_scale=1 / 255, crop=crop, blur_sigma=sigma)  # [0, 1]
    v = v + noise * torch.rand(n, 1, 1, 1, generator=g, device=x.device) * torch.randn(v.shape, generator=g,
                                                                                       device=x.device)
    return expert.normalize(v + blobs(v.shape, g, x.device))


def audio_views(x: torch.Tensor, g: torch.Generator, widths: int = 12) -> torch.Tensor:
    """Label-preserving views of z-scored log-mels (B, 1, 64, 64): one narrow frequency and time mask (to the
    minimum), noise of 0.25 σ, and blobs."""
    b, _, f, t = x.shape
    dev = x.device

    def band(size):
        w = (torch.rand(b, generator=g, device=dev) * widths).long()
        start = (torch.rand(b, generator=g, device=dev) * (size - w + 1)).long()
        ar = torch.arange(size, device=dev)
        return (ar >= start[:, None]) & (ar < (start + w)[:, None])

    hit = band(f)[:, None, :, None] | band(t)[:, None, None, :]
    v = x.masked_fill(hit, float(x.min()))
    return v + 0.25 * torch.randn(v.shape, generator=g, device=dev) + blobs(v.shape, g, dev, amplitude=1.0)


# ---------------------------------------------------------------------------- training and reading
ETA_AFTER = 10  # steps timed before a reader's training says how long it will take
def fit(reader: Reader, batches, steps: int, lr: float = 0.05, say=print) -> float:
    """Train ``reader`` for ``steps`` SGD steps (Nesterov momentum, one-cycle learning rate, label smoothing
    0.1) on ``batches()`` → (inputs, labels). Returns the seconds it took."""
    opt = torch.optim.SGD(reader.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    reader.train()
    t0, shown = time.perf_counter(), time.perf_counter()
    for step in range(steps):
        x, y = batches()
        loss = F.cross_entropy(reader(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step == ETA_AFTER - 1 and steps > 2 * ETA_AFTER:  # the expected time on this machine, measured
            rate = ETA_AFTER / (time.perf_counter() - t0)
            say(f"    {rate:.1f} steps/s here: about {steps / rate / 60:.0f} min for the {steps} steps")
        if time.perf_counter() - shown > 30 or step == steps - 1:
            shown = time.perf_counter()
            say(f"    step {step + 1}/{steps}, loss {loss.item():.3f}, {shown - t0:.0f} s")
    reader.eval()
    return time.perf_counter() - t0


@torch.no_grad()
def read(reader: Reader, inputs: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """The reader's label (N,) for encoder inputs (N, C, S, S), in eval mode."""
    was = reader.training
    reader.eval()
    out = torch.cat([reader(inputs[i:i + batch].float()).argmax(1) for i in range(0, len(inputs), batch)]) \
        if len(inputs) else torch.zeros(0, dtype=torch.long, device=inputs.device)
    reader.train(was)
    return out

