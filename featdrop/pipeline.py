"""From a resolved Config to data on the device and the functions that turn it into model inputs.

A *modality* says how a batch of raw items becomes (a) clean encoder inputs, (b) expert views,
(c) the tensor the viewmaker perturbs, and (d) encoder inputs from a perturbed tensor. Images:
raw = uint8 photos; the viewmaker works on [0, 1] pixels and the encoder sees CIFAR-normalised
pixels. Audio (``featdrop.audio``) plugs in the same four functions on waveforms / log-mels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import datasets, views
from .config import Config, ConfigError, size


@dataclass
class Modality:
    in_channels: int
    clean: Callable          # raw (B, ...) → encoder input
    expert: Callable         # (raw, generator) → encoder input of one expert view
    expert_base: Callable    # (raw, generator) → the same kind of view, in ``base`` space (for display)
    base: Callable           # raw → tensor the viewmaker perturbs
    to_encoder: Callable     # perturbed tensor → encoder input
    clamp: tuple[float, float]  # the valid range of ``base`` (used when cfg.clamp)
    audio: bool = False
    # raw batch → the raw inputs of view 1 and view 2; identity unless a modality stores two
    # versions per item (audio with noise_draw="independent": two independent noise draws)
    pair: Callable = staticmethod(lambda raw: (raw, raw))


def image_modality() -> Modality:
    def base(raw):
        return raw.float() / 255

    return Modality(
        in_channels=3,
        clean=lambda raw: views.normalize(base(raw)),
        expert=lambda raw, g: views.expert_views(raw.float(), g, in_scale=1 / 255, normalized=True),
        expert_base=lambda raw, g: views.expert_views(raw.float(), g, in_scale=1 / 255),
        base=base,
        to_encoder=views.normalize,
        clamp=(0.0, 1.0),
    )


@dataclass
class Data:
    modality: Modality
    train: object                 # has .draw(epoch) → Split-like (.images, .labels, .alt_labels)
    test: datasets.Split
    num_classes: int
    num_alt_classes: int


def load(cfg: Config, device: torch.device) -> Data:
    """Load both splits onto ``device``; raises ConfigError if the batch does not fit the data."""
    if cfg.overlay == "noise":
        from . import audio

        data = audio.load(cfg, device)
    else:
        from .overlays import NUM_ALT_CLASSES

        kw = dict(seed=cfg.seed, size=cfg.overlay_size, opacity=cfg.overlay_opacity, download=cfg.download,
                  device=device)
        train = datasets.ImageOverlaySet(cfg.overlay, "train", cfg.data_dir, subset=size(cfg.subset), **kw)
        test = datasets.ImageOverlaySet(cfg.overlay, "test", cfg.data_dir, subset=size(cfg.test_subset), **kw).draw(0)
        data = Data(image_modality(), train, test, 10, NUM_ALT_CLASSES[cfg.overlay])
    n_train = len(data.train.labels)
    if cfg.batch_size > n_train:
        raise ConfigError(f"config field 'batch_size' = {cfg.batch_size} is invalid: allowed at most the "
                          f"{n_train} training examples (lower batch_size or raise subset)")
    return data
