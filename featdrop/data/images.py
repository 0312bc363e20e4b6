"""Overlay data sets as whole tensors: CIFAR-10 images with an overlay and both labels.

Overlays are drawn from a generator seeded by (seed, split, draw): the test split always uses
draw 0, so evaluation is repeatable; training uses draw = epoch when ``overlay_resample`` is on
(the reference redraws at every access) and draw 0 otherwise.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from . import cifar, overlays
from .base import Split, coarse_labels

_SPLIT_CODE = {"train": 1, "test": 2}


def check_subset(subset: int, n: int, split: str, what: str) -> None:
    """ConfigError naming the config field (subset for the training split, test_subset for the test split)
    when it asks for more items than the split holds."""
    if subset > n:
        field = "subset" if split == "train" else "test_subset"
        raise ConfigError(f"config field {field!r} = {subset} is invalid: allowed at most the {n} {split} "
                          f"{what}, or \"all\"")


def overlay_generator(seed: int, split: str, draw: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + _SPLIT_CODE[split] * 10_007 + draw)


class ImageOverlaySet:
    """Loads a split once and composites overlays on demand (on whatever device ``base`` lives)."""

    def __init__(self, overlay: str, split: str, data_dir: str, *, seed: int = 0, size: float = 1.0,
                 opacity: float = 1.0, subset: int | None = None, download: bool = True,
                 device: str | torch.device = "cpu"):
        overlays.check_name(overlay)
        self.overlay, self.split, self.seed, self.size, self.opacity = overlay, split, seed, size, opacity
        images, labels = cifar.load_cifar10(data_dir, split, download=download)
        if subset is not None:
            check_subset(subset, len(labels), split, "images")
            # A random subset, independent of the run's seed: the same images for every run.
            idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(12345))[:subset]
            images, labels = images[idx], labels[idx]
        self.digits = self.digit_labels = None
        if overlay == "digits":
            self.digits, self.digit_labels = cifar.load_mnist(data_dir, split, download=download)
        self.base = images.to(device)
        self.labels = labels.to(device)

    def draw(self, draw: int = 0) -> Split:
        gen = overlay_generator(self.seed, self.split, draw)
        images, alt, masks = overlays.apply(self.overlay, self.base, gen, size=self.size,
                                            opacity=self.opacity, digits=self.digits,
                                            digit_labels=self.digit_labels, with_masks=True)
        return Split(images, self.labels, alt.to(self.base.device), self.base, coarse_labels(self.labels),
                     masks)
