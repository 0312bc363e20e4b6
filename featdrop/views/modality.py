"""From a resolved Config to data on the device and the functions that turn raw items into model inputs.

A ``Modality`` says how a batch of raw items becomes (a) clean encoder inputs, (b) expert views, (c) the
tensor the viewmaker perturbs, and (d) encoder inputs from a perturbed tensor. Images: raw = uint8 photos;
the viewmaker works on [0, 1] pixels and the encoder sees CIFAR-normalised pixels. Audio: raw = waveforms;
the viewmaker perturbs the z-scored log-mel, which is also the encoder's input.

Each modality has one record (``MODALITIES``): its input shape and its loader. An overlay's record
(``featdrop.data.records``) names its modality, so ``load(cfg)`` needs no list of overlays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..config import Config, size
from ..data import audio as audio_data
from ..data import records
from ..data.base import Data
from ..data.images import ImageOverlaySet, Source
from ..errors import ConfigError
from . import expert
from .audio import REFERENCE, LogMel, Strengths, spectral_view, waveform_view


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
    logmel: LogMel | None = None  # audio: the feature extractor with the training μ, σ (inversion, plots)


def image_modality(blur_p: float = 0.5) -> Modality:
    """Images: uint8 photos. ``blur_p``: the expert views' blur probability (0.5: the reference's CIFAR-10
    recipe, and SimCLR/MoCo-v2's at 96 px and above; 0: SimCLR's recipe for small images of a folder)."""
    def base(raw):
        return raw.float() / 255

    return Modality(
        in_channels=3,
        clean=lambda raw: expert.normalize(base(raw)),
        expert=lambda raw, g: expert.expert_views(raw.float(), g, in_scale=1 / 255, normalized=True,
                                                  blur_p=blur_p),
        expert_base=lambda raw, g: expert.expert_views(raw.float(), g, in_scale=1 / 255, blur_p=blur_p),
        base=base,
        to_encoder=expert.normalize,
        clamp=(0.0, 1.0),
    )


AUDIO_VIEWS = {"spectral": spectral_view, "waveform": waveform_view}


def audio_modality(logmel: LogMel, audio_views: str, two_per_item: bool,
                   strengths: Strengths = REFERENCE) -> Modality:
    """Raw items are waveforms (B, L), or (B, 2, L) when the two views have independent noise draws;
    ``strengths``: the expert views' (the reference's by default)."""
    if audio_views not in AUDIO_VIEWS:
        raise ConfigError(f"audio_views = {audio_views!r} is invalid: allowed {', '.join(AUDIO_VIEWS)}")
    view = AUDIO_VIEWS[audio_views]

    def first(raw):  # view 1's raw waveform
        return raw[:, 0] if raw.dim() == 3 else raw

    extra = dict(pair=lambda raw: (raw[:, 0], raw[:, 1])) if two_per_item else {}
    return Modality(
        in_channels=1,
        clean=lambda raw: logmel(first(raw)),
        expert=lambda raw, g: view(first(raw), logmel, g, strengths),
        expert_base=lambda raw, g: view(first(raw), logmel, g, strengths),
        base=lambda raw: logmel(first(raw)),
        to_encoder=lambda x: x,
        clamp=(logmel.lo, logmel.hi),
        audio=True,
        logmel=logmel,
        **extra,
    )


# ---------------------------------------------------------------------------- loading, per modality
BLUR_FROM = 96  # px: an image folder's expert views blur from this size up (SimCLR, MoCo-v2); CIFAR-10 always


def _load_images(cfg: Config, device: torch.device) -> Data:
    kw = dict(seed=cfg.seed, size=cfg.overlay_size, opacity=cfg.overlay_opacity, download=cfg.download,
              device=device, source=Source.of(cfg))
    train = ImageOverlaySet(cfg.overlay, "train", cfg.data_dir, subset=size(cfg.subset), **kw)
    test = ImageOverlaySet(cfg.overlay, "test", cfg.data_dir, subset=size(cfg.test_subset), **kw).draw(0)
    blur = 0.5 if cfg.dataset == "cifar10" or cfg.image_size >= BLUR_FROM else 0.0
    alt = records.get(cfg.overlay).num_alt_classes()
    return Data(image_modality(blur), train, test, len(train.classes), alt, class_names=train.classes)


def _load_audio(cfg: Config, device: torch.device) -> Data:
    """Both splits on ``device``, the log-mel fitted to the training set, and the audio modality."""
    names = list(records.get(cfg.overlay).alt_class_names(cfg.noise_classes))
    clips = audio_data.load_clips(cfg.data_dir, cfg.audio_dataset)
    noise = [r.to(device) for r in audio_data.load_noise(cfg.data_dir, names, cfg.noise_volume)]
    two = cfg.noise_draw == "independent"
    kw = dict(seed=cfg.seed, two_per_item=two, device=device)
    train = audio_data.SpokenDigitSet(clips, cfg.audio_dataset, "train", noise, names,
                                      subset=size(cfg.subset), **kw)
    test = audio_data.SpokenDigitSet(clips, cfg.audio_dataset, "test", noise, names,
                                     subset=size(cfg.test_subset), **kw)
    shared = set(train.speakers) & set(test.speakers)
    if shared:
        raise RuntimeError(f"speakers {sorted(shared)} are in both the train and the test split")
    raw = train.draw(0).images
    logmel = LogMel(device).fit(raw[:, 0] if two else raw)
    return Data(audio_modality(logmel, cfg.audio_views, two, audio_strengths(cfg)), train, test.draw(0), 10,
                len(names))


def audio_strengths(cfg: Config) -> Strengths:
    """The expert views' strengths from the config's audio_* fields (None: the reference's value)."""
    given = dict(mask_width=cfg.audio_mask_width, db_noise=cfg.audio_db_noise,
                 time_shift=cfg.audio_time_shift, time_stretch=cfg.audio_time_stretch,
                 pitch_shift=cfg.audio_pitch_shift, gain_db=cfg.audio_gain_db)
    return Strengths(**{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class ModalityRecord:
    """One modality: the shape of its encoder inputs and how a run loads its data."""
    name: str
    in_channels: int
    side: int                                  # encoder inputs are (in_channels, side, side)
    loader: Callable[[Config, torch.device], Data]


MODALITIES = {"image": ModalityRecord("image", 3, 32, _load_images),
              "audio": ModalityRecord("audio", 1, 64, _load_audio)}


def record(overlay: str) -> ModalityRecord:
    return MODALITIES[records.get(overlay).modality]


def load(cfg: Config, device: torch.device) -> Data:
    """Load both splits onto ``device``; raises ConfigError if the batch does not fit the data."""
    data = record(cfg.overlay).loader(cfg, device)
    n_train = len(data.train.labels)
    if cfg.batch_size > n_train:
        raise ConfigError(f"config field 'batch_size' = {cfg.batch_size} is invalid: allowed at most the "
                          f"{n_train} training examples (lower batch_size or raise subset)")
    return data
