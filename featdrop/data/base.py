"""The types every data set shares: a split of items with both labels, a loaded data set, the record that
says what an overlay is, and the on-disk cache of decoded data.

An *overlay* is the easy feature pasted on every item (a shape, a digit, a letter on a CIFAR-10 photo;
background noise under a spoken digit). Its label is the *alternate* label; the photo's class (or the
spoken digit) is the *main* label. One ``Overlay`` record per overlay, defined beside its compositing code
(``featdrop.data.overlays``, ``featdrop.data.audio``) and gathered in ``featdrop.data.records``, is what
config validation, the figures and the suppression report read.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..rundir import atomic_save

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DIGIT_NAMES = tuple(str(d) for d in range(10))
# Coarse labels (Chen, Fu et al., "Perfectly Balanced", ICML 2022; thanos-code's sparse2coarse):
# {airplane, automobile, ship, truck} → 1 (vehicles), the six animals → 0 (animals).
COARSE_CLASSES = ("animals", "vehicles")
VEHICLES = (0, 1, 8, 9)
CACHE_VERSION = 1


def coarse_labels(labels: torch.Tensor) -> torch.Tensor:
    """CIFAR-10 class (N,) → coarse class (N,): 1 for the four vehicle classes, 0 for the six animals."""
    return torch.isin(labels, torch.tensor(VEHICLES, device=labels.device)).long()


def parse_names(spec: str) -> tuple[str, ...]:
    """'babble, traffic' → ('babble', 'traffic'): a comma-separated list of names, blanks dropped."""
    return tuple(s.strip() for s in spec.split(",") if s.strip())


@dataclass(frozen=True)
class Overlay:
    """What featdrop knows of one overlay. Adding an overlay is one record beside its compositing code."""
    name: str
    modality: str                      # "image" (CIFAR-10 photos, 3×32×32)
                                       # | "audio" (spoken digits, log-mels)
    alt_names: tuple[str, ...]         # the alternate label's classes in label order
                                       # (audio: from noise_classes)
    size_max: float = 3.0              # largest overlay_size at which the overlay still fits the input
    budget: float = 0.05               # the viewmaker's default ε with this overlay (feature_dropout.md §1.4)
    budget_max: float = 1.0            # largest meaningful ε: image pixels live in [0, 1]
    copies: int = 1                    # copies of the overlay per image; 4: one per quadrant (digits, letters)
    min_side: int = 16                 # the smallest image_size (px) at which the overlay is still legible
    main_names: tuple[str, ...] = CIFAR10_CLASSES  # the main label's classes

    def alt_class_names(self, noise_classes: str | None = None) -> tuple[str, ...]:
        """The alternate label's class names in label order; audio's are the config's ``noise_classes``."""
        if self.modality == "audio" and noise_classes is not None:
            return parse_names(noise_classes)
        return self.alt_names

    def num_alt_classes(self, noise_classes: str | None = None) -> int:
        return len(self.alt_class_names(noise_classes))

    def has_alt_label(self) -> bool:
        """False for ``none``: its alternate label is one constant class, nothing to probe or show."""
        return len(self.alt_names) > 1 or self.modality == "audio"


@dataclass
class Split:
    images: torch.Tensor      # uint8 (N, 3, 32, 32), overlay composited
                              # (audio: float waveforms, see data.audio)
    labels: torch.Tensor      # int64 (N,), main label: CIFAR-10 class or spoken digit
    alt_labels: torch.Tensor  # int64 (N,), overlay class (alternate label)
    base: torch.Tensor        # the items without overlay (for redraws)
    coarse_labels: torch.Tensor | None = None  # int64 (N,), vehicles 1 / animals 0 (CIFAR-10 only)
    masks: torch.Tensor | None = None          # bool (N, 32, 32), the overlay's pixels (image overlays)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Data:
    """A loaded data set: its modality (how raw items become encoder inputs and views, see
    ``featdrop.views.modality``), the training set and the test split."""
    modality: Any
    train: Any                    # has .draw(draw) → Split (overlays redrawn per draw), and .labels
    test: Split
    num_classes: int
    num_alt_classes: int
    class_names: tuple[str, ...] | None = None  # the main label's classes (None: the overlay record's)


# ---------------------------------------------------------------------------- the cache of decoded data
def read_cache(path: Path) -> dict | None:
    """The dict cached at ``path``; None when there is none, or with a warning naming the file when it
    cannot be read (truncated by a full disk or a copy, or not a torch file): the caller rebuilds it."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, weights_only=True)
        if not isinstance(blob, dict):
            raise TypeError(f"it holds a {type(blob).__name__}, not a dict")
        return blob
    except Exception as exc:  # zip/pickle/EOF errors of a damaged file: rebuild rather than fail
        first = (str(exc).splitlines() or [""])[0].split(". ")[0][:120]  # torch's messages run on
        reason = type(exc).__name__ + (f": {first}" if first else "")
        warnings.warn(f"data cache {path} is damaged or unreadable ({reason}); rebuilding it from the "
                      f"source files", stacklevel=3)
        return None


def cached(path: Path, build):
    """(images, labels) from the cache at ``path``, or from ``build()`` (then written to the cache)."""
    blob = read_cache(path)
    if blob is not None and blob.get("version") == CACHE_VERSION and {"images", "labels"} <= blob.keys():
        return blob["images"], blob["labels"]
    images, labels = build()
    atomic_save({"version": CACHE_VERSION, "images": images, "labels": labels}, path)
    return images, labels
