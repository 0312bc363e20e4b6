"""Overlay data sets: images with an overlay and both labels, from CIFAR-10 or a user's folder of images
(``featdrop.data.folder``), at any image size.

Overlays are drawn from a generator seeded by (seed, split, draw): the test split always uses
draw 0, so evaluation is repeatable; training uses draw = epoch when ``overlay_resample`` is on
(the reference redraws at every access) and draw 0 otherwise. A streamed training split (a folder too large
to decode once) draws every image's overlay once and paints it on each batch as the batch is decoded.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from . import cifar, folder, overlays
from .base import CIFAR10_CLASSES, Split, coarse_labels

_SPLIT_CODE = {"train": 1, "test": 2}
DATASETS = ("cifar10", "imagefolder")
DECODES = ("auto", "once", "stream")
NATIVE_SIDE = {"cifar10": 32, "imagefolder": 64}  # image_size=None


def check_subset(subset: int, n: int, split: str, what: str) -> None:
    """ConfigError naming the config field (subset for the training split, test_subset for the test split)
    when it asks for more items than the split holds."""
    if subset > n:
        field = "subset" if split == "train" else "test_subset"
        raise ConfigError(f"config field {field!r} = {subset} is invalid: allowed at most the {n} {split} "
                          f"{what}, or \"all\"")


def overlay_generator(seed: int, split: str, draw: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + _SPLIT_CODE[split] * 10_007 + draw)


@dataclass(frozen=True)
class Source:
    """Where a run's photos come from (the config's dataset fields), as the loaders take them."""
    dataset: str = "cifar10"
    data_path: str | None = None
    image_size: int = 32
    decode: str = "auto"
    workers: int | None = None

    @classmethod
    def of(cls, cfg) -> "Source":
        return cls(cfg.dataset, cfg.data_path, cfg.image_size, cfg.decode, cfg.loader_workers)

    def tag(self) -> str:
        """A name for caches of what depends on the photos: '' for CIFAR-10 at 32 px (the names before image
        folders existed), else the data set, its files' digest and the size."""
        if self.dataset == "cifar10":
            return "" if self.image_size == 32 else f"cifar10-{self.image_size}px-"
        lst = folder.listing(self.data_path, "train")
        return f"folder-{lst.root.name}-{lst.digest()}-{self.image_size}px-"


def class_names(source: Source) -> tuple[str, ...]:
    """The main label's classes: CIFAR-10's, or the folder's sub-folders."""
    return CIFAR10_CLASSES if source.dataset == "cifar10" else folder.listing(source.data_path, "train").classes


def load(source: Source, split: str, data_dir: str, download: bool = True):
    """(uint8 images (N, 3, S, S) — a tensor, or a ``folder.Streamed`` for a streamed training split —,
    labels, class names) of ``split``."""
    if source.dataset == "cifar10":
        images, labels = cifar.load_cifar10(data_dir, split, download=download)
        if source.image_size != images.shape[-1]:  # CIFAR-10 at another size: resized once
            images = F.interpolate(images.float(), size=(source.image_size,) * 2, mode="bilinear",
                                   antialias=source.image_size < images.shape[-1], align_corners=False)
            images = images.round().clamp(0, 255).to(torch.uint8)
        return images, labels, CIFAR10_CLASSES
    lst = folder.listing(source.data_path, split)
    if lst.not_images and (split == "train" or folder.presplit(lst.root)):  # a class folder's, once
        warnings.warn(f"{lst.root}: {len(lst.not_images)} file(s) of the {split} split are not images (by their "
                      f"extension) and are skipped: {', '.join(lst.not_images[:3])}"
                      + (" ..." if len(lst.not_images) > 3 else ""), stacklevel=3)
    stream = split == "train" and (source.decode == "stream" or (
        source.decode == "auto" and not folder.fits_in_memory(len(lst.files), source.image_size)))
    if stream:
        return folder.Streamed(lst, source.image_size, source.workers), lst.labels, lst.classes
    images, labels, _ = folder.load_once(lst, split, source.image_size, Path(data_dir) / "featdrop_cache",
                                         source.workers)
    return images, labels, lst.classes


class ImageOverlaySet:
    """Loads a split once and composites overlays on demand (on whatever device ``base`` lives; a streamed
    split paints each batch as it is decoded)."""

    def __init__(self, overlay: str, split: str, data_dir: str, *, seed: int = 0, size: float = 1.0,
                 opacity: float = 1.0, subset: int | None = None, download: bool = True,
                 device: str | torch.device = "cpu", source: Source = Source()):
        overlays.check_name(overlay)
        self.overlay, self.split, self.seed, self.size, self.opacity = overlay, split, seed, size, opacity
        images, labels, self.classes = load(source, split, data_dir, download)
        if subset is not None:
            check_subset(subset, len(labels), split, "images")
            # A random subset, independent of the run's seed: the same images for every run.
            idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(12345))[:subset]
            images = images.subset(idx) if isinstance(images, folder.Streamed) else images[idx]
            labels = labels[idx]
        self.cifar = source.dataset == "cifar10"
        self.digits = self.digit_labels = None
        if overlay == "digits":
            self.digits, self.digit_labels = cifar.load_mnist(data_dir, split, download=download)
        self.streamed = isinstance(images, folder.Streamed)
        self.base = images if self.streamed else images.to(device)
        self.device = torch.device(device)
        self.labels = labels.to(device)

    def draw(self, draw: int = 0) -> Split:
        gen = overlay_generator(self.seed, self.split, draw)
        coarse = coarse_labels(self.labels) if self.cifar else None  # vehicles vs animals: CIFAR-10's
        if self.streamed:
            params = overlays.sample(self.overlay, len(self.labels), gen, self.digit_labels)
            painted = Painted(self, params)
            return Split(painted, self.labels, params["labels"].to(self.device), self.base, coarse,
                         painted.masks)
        images, alt, masks = overlays.apply(self.overlay, self.base, gen, size=self.size,
                                            opacity=self.opacity, digits=self.digits,
                                            digit_labels=self.digit_labels, with_masks=True)
        return Split(images, self.labels, alt.to(self.base.device), self.base, coarse, masks)


class Painted:
    """A streamed split's images with their overlay, painted when indexed (decoded by ``folder.Streamed``);
    ``masks[idx]`` gives the overlay's pixels of the same images. The last batch is kept, so images and masks
    of one batch are painted once."""

    def __init__(self, data: ImageOverlaySet, params: dict):
        self.data, self.params = data, params
        self.device = data.device
        self._last: tuple | None = None
        self.masks = _Masks(self)

    def __len__(self) -> int:
        return len(self.data.base)

    @property
    def shape(self) -> tuple:
        return self.data.base.shape

    def prefetch(self, key) -> None:
        self.data.base.prefetch(key)

    def paint(self, key):
        k = repr(key.tolist()) if torch.is_tensor(key) else repr(key)
        if self._last is None or self._last[0] != k:
            d = self.data
            raw = d.base[key].to(self.device)
            rows = torch.arange(len(d.base))[key.cpu() if torch.is_tensor(key) else key]
            masks = torch.zeros(raw.shape[0], raw.shape[-1], raw.shape[-1], dtype=torch.bool, device=self.device)
            images = overlays.composite(d.overlay, raw, overlays.take(self.params, rows), size=d.size,
                                        opacity=d.opacity, digits=d.digits, masks=masks)
            self._last = (k, images, masks)
        return self._last[1], self._last[2]

    def __getitem__(self, key) -> torch.Tensor:
        return self.paint(key)[0]


class _Masks:
    def __init__(self, painted: Painted):
        self.painted = painted

    def __getitem__(self, key) -> torch.Tensor:
        return self.painted.paint(key)[1]
