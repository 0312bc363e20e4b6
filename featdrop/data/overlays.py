"""Overlay data sets (Tamkin et al., "Feature Dropout", NeurIPS 2023, §4 of the reference note).

Each image gets an easy "alternate" feature pasted on it, independent of its CIFAR-10 class:

- ``shapes``:  square / triangle / circle (3 classes), random RGB, alpha 180/255, centred box [W/3, 2W/3]².
- ``digits``:  one MNIST digit resized to 10×10, pasted 4× at (4,4), (16,4), (4,16), (16,16) (10 classes).
- ``letters``: one uppercase letter (26 classes) drawn 4×, one per quadrant at jittered positions, in one
  random colour (DejaVu Sans 12 px from matplotlib, where the reference shipped Arial).
- ``none``:    the image unchanged, alternate label 0.

Shapes and glyphs are rendered once with Pillow (so pixel coverage matches the reference); the
compositing is a handful of tensor operations over the whole batch, on any device.
Alternate labels are exactly balanced (a shuffled ``arange(N) % K``; the reference drew them
i.i.d.), and everything random comes from the ``torch.Generator`` passed in.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import DIGIT_NAMES, Overlay

IMAGE_SIZE = 32
SHAPES = ("square", "triangle", "circle")
LETTERS = tuple(chr(ord("A") + i) for i in range(26))
SHAPE_ALPHA = 180 / 255          # the reference's fill alpha
DIGIT_SIZE = 10                  # MNIST 28×28 → 10×10
DIGIT_CENTRES = (9, 21)          # copies' centres: top-left corners 4 and 16 at size 10
LETTER_FONT_SIZE = 12
# Inclusive ranges of the text anchor per quadrant, (x range, y range), for W = 32 (feature_dropout.md §4.3).
LETTER_RANGES = (((0, 6), (0, 6)), ((16, 21), (0, 6)), ((0, 6), (16, 21)), ((16, 21), (16, 21)))
# The image overlays' records (featdrop.data.base.Overlay). size_max: the largest overlay_size at which the
# overlay still fits the 32×32 image: the shape's box is size·W/3 about the centre (≤ W at 3); the four digit
# copies, centred at 9 and 21, are round(10·size) px wide (≤ 19 px stay inside); letters are drawn at the
# reference's jittered anchors, where a 12 px glyph already reaches the last pixel column, so any larger
# font runs off the image. Budgets: feature_dropout.md §1.4 (letters 0.1, the others 0.05).
RECORDS = (
    Overlay("none", "image", alt_names=("–",)),
    Overlay("shapes", "image", alt_names=SHAPES),
    Overlay("digits", "image", alt_names=DIGIT_NAMES, size_max=1.9, copies=4, min_side=32),
    Overlay("letters", "image", alt_names=LETTERS, size_max=1.0, budget=0.1, copies=4, min_side=32),
)
OVERLAY_NAMES = tuple(r.name for r in RECORDS)


def check_name(name: str) -> None:
    if name not in OVERLAY_NAMES:
        raise ConfigError(f"overlay={name!r} is unknown: allowed {', '.join(OVERLAY_NAMES)}")


def balanced_labels(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """n labels in [0, k), each class count within one of n/k, in random order."""
    return (torch.arange(n) % k)[torch.randperm(n, generator=generator)]


# ------------------------------------------------------------------------------- rendered assets
@lru_cache(maxsize=None)
def shape_masks(size: float = 1.0) -> torch.Tensor:
    """Coverage masks ``(3, 32, 32)`` in {0, 1} for square, triangle, circle, drawn by Pillow.

    ``size`` scales the box about the image centre; 1 is the reference box [W/3, 2W/3]².
    """
    from PIL import Image, ImageDraw

    w = IMAGE_SIZE
    c, half = w / 2, size * w / 6
    lo, hi = c - half, c + half
    masks = []
    for shape in SHAPES:
        im = Image.new("L", (w, w), 0)
        draw = ImageDraw.Draw(im)
        if shape == "square":
            draw.rectangle([lo, lo, hi, hi], fill=255)
        elif shape == "triangle":  # isosceles, apex up: (W/2, H/3), base at 2H/3
            draw.polygon([(c, lo), (lo, hi), (hi, hi)], fill=255)
        else:
            draw.ellipse([lo, lo, hi, hi], fill=255)
        masks.append(torch.from_numpy(np.asarray(im) > 0))
    return torch.stack(masks).float()


@lru_cache(maxsize=None)
def font_path() -> str:
    import matplotlib

    return str(matplotlib.get_data_path() + "/fonts/ttf/DejaVuSans.ttf")


GLYPH_MARGIN = 24  # glyphs are drawn at (24, 24) on a 64×64 canvas: nothing clips at any anchor


@lru_cache(maxsize=None)
def letter_glyphs(size: float = 1.0) -> torch.Tensor:
    """Anti-aliased coverage ``(26, 64, 64)`` in [0, 1] of each letter drawn at anchor (24, 24)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path(), max(1, round(LETTER_FONT_SIZE * size)))
    out = []
    for letter in LETTERS:
        im = Image.new("L", (64, 64), 0)
        ImageDraw.Draw(im).text((GLYPH_MARGIN, GLYPH_MARGIN), letter, fill=255, font=font)
        out.append(torch.from_numpy(np.asarray(im).astype(np.float32) / 255))
    return torch.stack(out)


def resize_digits(digits: torch.Tensor, size: int = DIGIT_SIZE) -> torch.Tensor:
    """MNIST ``uint8 (N, 28, 28)`` → ``uint8 (N, size, size)`` by antialiased bicubic (Pillow's default)."""
    x = F.interpolate(digits[:, None].float(), size=(size, size), mode="bicubic", antialias=True,
                      align_corners=False)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8)


# ------------------------------------------------------------------------------------ compositing
def _resample(plane: torch.Tensor, side: int) -> torch.Tensor:
    """A (n, c, 32, 32) plane drawn at the reference geometry, bilinear to (n, c, side, side): every overlay
    keeps its share of the image at any image_size (antialiased when it shrinks)."""
    if plane.shape[-1] == side or plane.shape[-1] == 1:
        return plane
    return F.interpolate(plane, size=(side, side), mode="bilinear", align_corners=False,
                         antialias=side < plane.shape[-1]).clamp_(0, None)


def _composite(images: torch.Tensor, paint, chunk: int = 1024,
               masks: torch.Tensor | None = None) -> torch.Tensor:
    """Alpha-blend a per-image overlay onto uint8 ``images (N, 3, S, S)``.

    ``paint(sl)`` returns ``(colour, alpha)`` for the images ``sl`` at the reference 32 × 32 geometry: colour
    (n,3,32,32) or (n,3,1,1) in 0..255 and alpha (n,1,32,32) in [0,1]; at another side S both are resampled
    to S. Working in chunks keeps every temporary in cache: the blend is memory-bound, and this is several
    times faster on a CPU than whole-tensor floats. ``masks`` (bool (N, S, S)), when given, receives the
    overlay's pixels (alpha > 0).
    """
    out, side = torch.empty_like(images), images.shape[-1]
    for i in range(0, len(images), chunk):
        sl = slice(i, i + chunk)
        colour, alpha = paint(sl)
        if masks is not None:  # the overlay's pixels at the reference geometry, nearest to S: the same share
            drawn = (alpha > 0).float()
            masks[sl] = (drawn if side == drawn.shape[-1] else F.interpolate(drawn, size=(side, side)))[:, 0] > 0
        colour, alpha = _resample(colour, side), _resample(alpha, side).clamp_(max=1)
        x = images[sl].float()
        out[sl] = x.add_((colour - x).mul_(alpha)).round_().clamp_(0, 255).to(torch.uint8)
    return out


def sample(name: str, n: int, generator: torch.Generator, digit_labels: torch.Tensor | None = None) -> dict:
    """Every random choice of overlay ``name`` for n images, one row per image: the labels, and the colours,
    digits or letter positions (``composite`` paints them). Drawn once, they can be painted on any batch of
    those images (rows ``idx``: ``take(params, idx)``), which a streamed data set does."""
    if name == "none":
        return {"labels": torch.zeros(n, dtype=torch.int64)}
    if name == "shapes":
        labels, rgb = sample_shapes(n, generator)
        return {"labels": labels, "rgb": rgb}
    if name == "letters":
        labels, rgb, offsets = sample_letters(n, generator)
        return {"labels": labels, "rgb": rgb, "offsets": torch.stack([torch.stack(o, 1) for o in offsets], 1)}
    if digit_labels is None:
        raise ConfigError("overlay='digits' needs an MNIST pool: pass digits= and digit_labels=")
    labels, chosen = sample_digits(n, generator, digit_labels)
    return {"labels": labels, "chosen": chosen}


def take(params: dict, idx) -> dict:
    """The rows ``idx`` of every parameter."""
    return {k: v[idx.cpu() if torch.is_tensor(idx) else idx] for k, v in params.items()}


def composite(name: str, images: torch.Tensor, params: dict, *, size: float = 1.0, opacity: float = 1.0,
              digits: torch.Tensor | None = None, masks: torch.Tensor | None = None) -> torch.Tensor:
    """Paint overlay ``name`` with the parameters ``params`` (from ``sample``, one row per image) onto uint8
    ``images (N, 3, S, S)``."""
    dev = images.device
    if name == "none":
        return images
    lab = params["labels"].to(dev)
    if name == "shapes":
        colour = params["rgb"].to(dev).float()[:, :, None, None]
        alpha = shape_masks(size).to(dev)[:, None] * (SHAPE_ALPHA * opacity)  # (3, 1, 32, 32)
        return _composite(images, lambda sl: (colour[sl], alpha[lab[sl]]), masks=masks)
    if name == "letters":
        colour = params["rgb"].to(dev).float()[:, :, None, None]
        offsets = params["offsets"].to(dev)                                   # (N, 4 quadrants, (dx, dy))
        tables = [t.to(dev) for t in letter_tables(size)]

        def paint(sl):
            clear = None  # Π (1 − coverage) over the four copies, as Pillow's repeated draws give
            for q, table in enumerate(tables):
                keep = 1 - table[lab[sl], offsets[sl, q, 1], offsets[sl, q, 0]]  # (n, 32, 32)
                clear = keep if clear is None else clear.mul_(keep)
            return colour[sl], (1 - clear)[:, None] * opacity

        return _composite(images, paint, masks=masks)
    s = max(1, round(DIGIT_SIZE * size))
    small = resize_digits(digits, s).to(dev).float()  # (M, s, s): resize the pool once
    chosen = params["chosen"].to(dev)

    def paint(sl):
        grey = torch.zeros(len(chosen[sl]), IMAGE_SIZE, IMAGE_SIZE, device=dev)
        for cy in DIGIT_CENTRES:
            for cx in DIGIT_CENTRES:
                grey[:, cy - s // 2: cy - s // 2 + s, cx - s // 2: cx - s // 2 + s] = small[chosen[sl]]
        # Pixels exactly 0 are transparent, all others opaque grey (reference).
        return grey[:, None], (grey[:, None] > 0).float() * opacity

    return _composite(images, paint, masks=masks)


def sample_shapes(n, generator):
    """Shape class (N,) and RGB colour (N, 3) in 0..255."""
    return balanced_labels(n, 3, generator), torch.randint(0, 256, (n, 3), generator=generator)


def sample_digits(n, generator, digit_labels):
    """Digit class (N,) and the index (N,) into the pool of a random digit of that class."""
    labels = balanced_labels(n, 10, generator)
    pool = [torch.nonzero(digit_labels == k).flatten() for k in range(10)]
    counts = torch.tensor([len(p) for p in pool])
    if (counts == 0).any():
        raise ConfigError(f"the MNIST pool lacks digits {torch.nonzero(counts == 0).flatten().tolist()}")
    rank = (torch.rand(n, generator=generator) * counts[labels]).long()  # uniform within the class
    return labels, torch.cat(pool)[(torch.cumsum(counts, 0) - counts)[labels] + rank]


@lru_cache(maxsize=None)
def letter_tables(size: float = 1.0) -> tuple[torch.Tensor, ...]:
    """Per quadrant, every letter at every allowed anchor: (26, ny, nx, 32, 32) coverage planes."""
    glyphs, m, w = letter_glyphs(size), GLYPH_MARGIN, IMAGE_SIZE
    tables = []
    for (x_lo, x_hi), (y_lo, y_hi) in LETTER_RANGES:
        planes = [[glyphs[:, m - ay: m - ay + w, m - ax: m - ax + w] for ax in range(x_lo, x_hi + 1)]
                  for ay in range(y_lo, y_hi + 1)]
        tables.append(torch.stack([torch.stack(row, 1) for row in planes], 1))
    return tuple(tables)


def sample_letters(n, generator):
    """Letter (N,), RGB colour (N, 3), and per quadrant the anchor offsets (dx, dy) from the
    quadrant's lowest allowed anchor (so the text anchor is (x_lo + dx, y_lo + dy))."""
    labels = balanced_labels(n, 26, generator)
    rgb = torch.randint(0, 256, (n, 3), generator=generator)
    offsets = [(torch.randint(0, x_hi - x_lo + 1, (n,), generator=generator),
                torch.randint(0, y_hi - y_lo + 1, (n,), generator=generator))
               for (x_lo, x_hi), (y_lo, y_hi) in LETTER_RANGES]
    return labels, rgb, offsets


def add_shapes(images, generator, size=1.0, opacity=1.0, masks=None):
    params = sample("shapes", len(images), generator)
    return composite("shapes", images, params, size=size, opacity=opacity, masks=masks), params["labels"]


def add_digits(images, generator, digits, digit_labels, size=1.0, opacity=1.0, masks=None):
    """Paste one digit from the pool ``digits`` (uint8 (M, 28, 28)) four times on each image."""
    params = sample("digits", len(images), generator, digit_labels)
    return (composite("digits", images, params, size=size, opacity=opacity, digits=digits, masks=masks),
            params["labels"])


def add_letters(images, generator, size=1.0, opacity=1.0, masks=None):
    params = sample("letters", len(images), generator)
    return composite("letters", images, params, size=size, opacity=opacity, masks=masks), params["labels"]


MIN_SIDE = 16  # the smallest image side: the viewmaker halves it twice; overlays keep their share above it


def apply(name: str, images: torch.Tensor, generator: torch.Generator, *, size: float = 1.0,
          opacity: float = 1.0, digits: torch.Tensor | None = None, digit_labels: torch.Tensor | None = None,
          with_masks: bool = False):
    """Composite overlay ``name`` onto uint8 ``images (N, 3, S, S)``; returns (images, alt_labels), and
    with ``with_masks`` also the overlay's pixels, bool (N, S, S) (where its alpha is above 0). The overlay is
    drawn at the reference geometry of a 32 × 32 image and scaled to S.

    The generator lives on the CPU; ``images`` may be on any device and the result stays there.
    """
    check_name(name)
    if (images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3
            or images.shape[2] != images.shape[3] or images.shape[-1] < MIN_SIDE):
        raise ConfigError(f"images must be uint8 (N, 3, S, S) with S >= {MIN_SIDE}, got {images.dtype} "
                          f"{tuple(images.shape)}")
    side = images.shape[-1]
    masks = torch.zeros(len(images), side, side, dtype=torch.bool, device=images.device)
    if name == "none":
        out, labels = images, torch.zeros(len(images), dtype=torch.int64)
    elif name == "shapes":
        out, labels = add_shapes(images, generator, size, opacity, masks)
    elif name == "letters":
        out, labels = add_letters(images, generator, size, opacity, masks)
    else:
        if digits is None or digit_labels is None:
            raise ConfigError("overlay='digits' needs an MNIST pool: pass digits= and digit_labels=")
        out, labels = add_digits(images, generator, digits, digit_labels, size, opacity, masks)
    return (out, labels, masks) if with_masks else (out, labels)
