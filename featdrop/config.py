"""One flat, frozen run configuration.

Field names are the papermill parameter names of ``notebooks/pretrain.ipynb``, the keys of a
run's ``config.json`` and the words used in the README. ``None`` means "take it from the preset".
Presets are named sets of values (``PRESETS``), resolved by :func:`resolve`.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from . import device as devmod
from .data.audio import DEFAULT_NOISE_CLASSES
from .data.images import DATASETS, DECODES, NATIVE_SIDE
from .data.records import AUDIO_OVERLAYS, OVERLAYS
from .errors import ConfigError
from .losses import OBJECTIVES

VIEWS = ("expert", "viewmaker")
GAMES = ("alternating", "simultaneous")
DIST_BACKENDS = ("auto", "nccl", "gloo")
TRACKERS = (None, "tensorboard", "wandb")
LR_SCHEDULES = (None, "constant", "cosine")
PRESET_NAMES = ("auto", "quick", "paper", "imagenet100")
SUPERVISE = (None, "coarse", "main", "alt")
ENCODERS = ("resnet18", "resnet50", "convnet", "tcnet")
AUDIO_ONLY_ENCODERS = ("tcnet",)
PROBES = ("fast", "reference")
AUDIO_VIEWS = ("spectral", "waveform")
NOISE_DRAWS = ("shared", "independent")
AUDIO_DATASETS = ("fsdd", "audiomnist")


@dataclass(frozen=True)
class Config:
    # --- what to study
    overlay: str = "shapes"          # none | shapes | digits | letters (CIFAR-10) | noise (spoken digits)
    views: str = "expert"            # expert (hand-designed) | viewmaker (learned, adversarial)
    preset: str = "auto"             # auto: paper on CUDA, quick on CPU
    # --- optimisation (None: from the preset)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None          # encoder SGD learning rate
    lr_schedule: str | None = None   # constant (the reference) | cosine (MoCo-v2, per epoch); None: preset
    momentum: float = 0.9
    weight_decay: float = 1e-4
    viewmaker_lr: float = 1e-3       # viewmaker Adam learning rate
    # τ; None: 0.07 (SimCLR losses, the reference), 0.5 (supcon, spread: Thanos)
    temperature: float | None = None
    # reference (the paper's SimCLR variant: view-1 anchors, self term kept) | simclr (NT-Xent) | ifm;
    # supervised (need ``supervise``): supcon | spread (SupCon + class-conditional InfoNCE) | ae | ce (a CE
    # head alone: the supervised ceiling)
    loss: str = "reference"
    ifm_epsilon: float = 0.1         # IFM ε (cosine units); 0 = plain SimCLR
    ifm_alpha: float = 1.0           # IFM α: L = (L + α·L_ε)/(1+α)
    # labels a supervised loss sees: None (self-supervised) | coarse | main | alt
    supervise: str | None = None
    spread_alpha: float = 0.5        # spread = (1 − α)·SupCon + α·class-conditional InfoNCE
    # MoCo (loss moco | moco_ifm): K, the queue of negatives (None: the preset's); m, the key encoder's
    # momentum (0.99: the IFM command line; MoCo-v2's default 0.999); groups of the shuffled key batch
    moco_queue: int | None = None
    moco_momentum: float = 0.99
    moco_bn_splits: int = 8
    # supcon/spread: weight of a label-smoothed CE head (Thanos adds one); 0 = off
    ce_weight: float = 0.0
    # --- views
    budget: float | None = None      # viewmaker ε, mean |δ| per example (0.05; 0.1 letters; 0.125 audio)
    clamp: bool = False              # clamp viewmaker views to the data range (reference: off)
    num_res_blocks: int = 3
    viewmaker_width: int | None = None  # first conv's channels (reference 32; quick 16: 4× cheaper)
    # the viewmaker game: alternating (the reference: an encoder step on views made without gradient, then a
    # viewmaker step on fresh views) | simultaneous (one set of views, one forward and backward updates both
    # players: the encoder descends the loss, the viewmaker ascends it)
    game: str = "alternating"
    # --- model
    # resnet18 | resnet50 (ImageNet stem above 64 px) | convnet | tcnet (audio: convolutions along time, the
    # mel bands as channels)
    encoder: str | None = None
    # MLP head before the 128-d output; None: the objective's (reference: off; MoCo-v2: on)
    projection_head: bool | None = None
    embedding_dim: int = 128
    # --- data
    dataset: str = "cifar10"         # the photos: cifar10 | imagefolder (your own images, in data_path)
    # imagefolder: a folder of class sub-folders, or one holding train/ and val/ of them (docs/running.md)
    data_path: str | None = None
    image_size: int | None = None    # the images' side in pixels; None: 32 (cifar10), 64 (imagefolder)
    decode: str = "auto"             # imagefolder: once (a cached uint8 tensor) | stream (each batch) | auto
    loader_workers: int | None = None  # imagefolder: decoding workers; None: every core
    subset: int | str | None = None  # training examples: a number, "all", or None (the preset's: quick 5000)
    test_subset: int | str | None = None  # test examples: a number, "all", or None (the preset's: quick 2000)
    overlay_resample: bool = False   # redraw training overlays every epoch (reference: yes)
    # overlay scale relative to the reference geometry (the overlay record's size_max)
    overlay_size: float = 1.0
    overlay_opacity: float = 1.0     # multiplies the overlay's alpha (shapes: 180/255 × this); 0: invisible
    noise_volume: float = 0.05       # audio: peak amplitude of the background noise, in (0, 1]
    noise_draw: str = "shared"       # audio: noise class shared by both views | independent (reference)
    audio_views: str = "spectral"    # audio expert views: spectral (SpecAugment-like) | waveform
    audio_dataset: str = "fsdd"      # fsdd (offline copy) | audiomnist (download it yourself)
    # audio expert views' strengths; None: the preset's (paper: the reference's, AUDIO_REFERENCE_VIEWS)
    audio_mask_width: int | None = None     # spectral: time and mel masks of width ~U{0..w−1}; 0: none
    audio_db_noise: float | None = None     # spectral: dB noise std, a fraction of the log-mel's σ; 0: none
    audio_time_shift: float | None = None   # shift in time by up to ± this fraction of the clip; 0: off
    audio_time_stretch: float | None = None  # speed × e^U(±log(1+s)); 0: off
    audio_pitch_shift: float | None = None  # shift by up to ± this many mel bands; 0: off
    audio_gain_db: float | None = None      # loudness ± this many dB; 0: off
    # audio: comma-separated WAV names in <data_dir>/noise/, one class each; alt label = position
    noise_classes: str = DEFAULT_NOISE_CLASSES
    # --- probes
    probe: str = "fast"              # fast: cached features + on-device logistic regression | reference
    probe_epochs: int | None = None
    knn_k: int = 200
    # read every epoch's views with label oracles (alt_destroyed, main_destroyed); each oracle is trained once
    # per overlay configuration (minutes on a CPU) and cached in <data_dir>/featdrop_cache/oracles/
    oracles: bool = True
    tracker: str | None = None       # log every epoch: tensorboard (<out_dir>/tensorboard) | wandb (offline)
    # --- run
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    compile: bool = False            # torch.compile the viewmaker (no gain on a 2-core CPU: measured)
    # convolutions in channels_last memory format, on CUDA and on a CPU (steps 1.2-1.5x faster on 2 cores)
    channels_last: bool = True
    # one run over several processes (torchrun --nproc_per_node N -m featdrop train ...; docs/running.md)
    dist_backend: str = "auto"       # auto: nccl on CUDA (one GPU per process), gloo on a CPU | nccl | gloo
    sync_batchnorm: bool = True      # torchrun: BatchNorm statistics of the global batch, as in one process
    data_dir: str | None = None      # default: $FEATDROP_DATA, else ./data
    out_dir: str | None = None       # default: runs/<overlay>-<views>[-<loss>[-<supervise>]]-seed<seed>
    download: bool = True            # let torchvision download missing data sets
    progress: bool = True            # show a progress bar


PRESETS: dict[str, dict[str, Any]] = {
    # The reference hyperparameters (feature_dropout.md §2.3): ResNet-18, 200 epochs, full data.
    "paper": dict(epochs=200, batch_size=256, lr=0.03, encoder="resnet18", viewmaker_width=32,
                  probe_epochs=100, moco_queue=4096, lr_schedule="constant"),
    # Small ConvNet on a subset: pretraining + both probes in ≤ 10 min on a 2-core CPU.
    "quick": dict(epochs=10, batch_size=256, lr=0.03, encoder="convnet", viewmaker_width=16, subset=5000,
                  test_subset=2000, probe_epochs=100, moco_queue=2048, lr_schedule="constant"),
    # IFM's ImageNet-100 command line (main_moco.py: ResNet-50, batch 512, lr 0.8 cosine, 200 epochs,
    # MoCo-v2's K 65536 and the MLP head, m 0.99, τ 0.2 from loss=moco|moco_ifm) at 224 px, for several GPUs
    # under torchrun: docs/running.md. Give loss=moco_ifm (ε ifm_epsilon=0.1) or loss=moco,
    # dataset=imagefolder and data_path (featdrop imagenet100 builds the folder).
    "imagenet100": dict(epochs=200, batch_size=512, lr=0.8, lr_schedule="cosine", encoder="resnet50",
                        image_size=224, viewmaker_width=32, probe_epochs=100, moco_queue=65536),
}
# Overrides for the audio study (overlay="noise"), applied before PRESETS.
AUDIO_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(batch_size=128),  # the reference's audio batch (feature_dropout.md §2.5)
    # All FSDD clips (2,000 train, 1,000 test), 10 epochs of batch 64 with a cosine lr, the time-convolution
    # encoder and views that move the speech in time and loudness instead of masking it (issue 30; the search
    # and its gains: docs/results.md, "An encoder that hears the digit").
    "quick": dict(subset=None, test_subset=None, batch_size=64, epochs=10, lr_schedule="cosine",
                  encoder="tcnet", viewmaker_width=8, audio_mask_width=0, audio_time_shift=0.3,
                  audio_time_stretch=0.2, audio_gain_db=10.0),
}
# The reference's audio expert views (feature_dropout.md §3.2): what an audio run's views are unless a preset
# or the command line says otherwise.
AUDIO_REFERENCE_VIEWS: dict[str, Any] = dict(audio_mask_width=40, audio_db_noise=0.25, audio_time_shift=0.0,
                                             audio_time_stretch=0.0, audio_pitch_shift=0.0, audio_gain_db=0.0)
AUDIO_VIEW_RANGES = {  # (lo, hi): where a strength means something
    "audio_mask_width": (0, 64),      # at most the 64 frames / bands
    "audio_db_noise": (0, 4),         # σ units
    "audio_time_shift": (0, 1),       # the whole clip
    "audio_time_stretch": (0, 1),     # up to twice as fast or as slow
    "audio_pitch_shift": (0, 32),     # half the 64 bands
    "audio_gain_db": (0, 40),
}
# the largest overlay_size, and each overlay's budget and its bounds, are in its record
OVERLAY_SIZE_MIN = 0.1


def field_names() -> list[str]:
    return [f.name for f in fields(Config)]


def _bad(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"config field {name!r} = {value!r} is invalid: allowed {allowed}")


def make(**kwargs: Any) -> Config:
    """Build a Config from keyword arguments, rejecting unknown names loudly."""
    known = set(field_names())
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown}; known fields: {sorted(known)}")
    return validate(Config(**kwargs))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _types(name: str) -> tuple:
    """The types a field's annotation allows: (int, NoneType) for ``int | None``."""
    hint = typing.get_type_hints(Config)[name]
    return typing.get_args(hint) or (hint,)


def type_names(types: tuple) -> str:
    return " or ".join("None" if t is type(None) else t.__name__ for t in types)


def _check_types(cfg: Config) -> None:
    """Every field against its annotation, and every number finite: the first check, so that a new field
    cannot skip it. An int is allowed where a float is; a bool is neither an int nor a float here."""
    for f in fields(Config):
        v, types = getattr(cfg, f.name), _types(f.name)
        integer = isinstance(v, numbers.Integral) and not isinstance(v, bool)
        real = isinstance(v, numbers.Real) and not isinstance(v, (bool, numbers.Integral))
        ok = ((v is None and type(None) in types) or (isinstance(v, bool) and bool in types)
              or (integer and (int in types or float in types)) or (real and float in types)
              or (isinstance(v, str) and str in types))
        if not ok:
            raise _bad(f.name, v, type_names(types))
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and not math.isfinite(v):
            raise _bad(f.name, v, f"a finite {type_names(tuple(t for t in types if t is not type(None)))}")


def validate(cfg: Config) -> Config:
    _check_types(cfg)
    if not 0 <= cfg.seed < 2 ** 31:
        raise _bad("seed", cfg.seed, "an integer from 0 to 2**31 − 1")
    choices = dict(overlay=OVERLAYS, views=VIEWS, game=GAMES, preset=PRESET_NAMES, loss=OBJECTIVES,
                   probe=PROBES, tracker=TRACKERS, audio_views=AUDIO_VIEWS, noise_draw=NOISE_DRAWS,
                   audio_dataset=AUDIO_DATASETS, supervise=SUPERVISE, dist_backend=DIST_BACKENDS,
                   dataset=DATASETS, decode=DECODES, lr_schedule=LR_SCHEDULES)
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise _bad(name, getattr(cfg, name), "one of " + ", ".join(map(str, allowed)))
    if cfg.encoder is not None and cfg.encoder not in ENCODERS:
        raise _bad("encoder", cfg.encoder, "one of " + ", ".join(ENCODERS) + " or None")
    if cfg.encoder in AUDIO_ONLY_ENCODERS and OVERLAYS[cfg.overlay].modality != "audio":
        images = ", ".join(e for e in ENCODERS if e not in AUDIO_ONLY_ENCODERS)
        raise _bad("encoder", cfg.encoder, f"one of {images} for overlay={cfg.overlay!r} ({cfg.encoder} "
                   f"reads log-mels: overlay='noise')")
    for name, (lo, hi) in AUDIO_VIEW_RANGES.items():
        v = getattr(cfg, name)
        if v is not None and not lo <= v <= hi:
            kind = "an integer" if name == "audio_mask_width" else "a number"
            raise _bad(name, v, f"{kind} from {lo} to {hi} or None")
    for name in ("epochs", "batch_size", "subset", "test_subset", "probe_epochs", "knn_k", "embedding_dim",
                 "viewmaker_width", "moco_queue", "moco_bn_splits"):
        v = getattr(cfg, name)
        if name in ("subset", "test_subset") and v == "all":
            continue
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            extra = ', "all"' if name in ("subset", "test_subset") else ""
            raise _bad(name, v, "a positive integer"
                       + ("" if name in ("knn_k", "embedding_dim", "moco_bn_splits") else f"{extra} or None"))
    if cfg.batch_size is not None and cfg.batch_size < 2:
        raise _bad("batch_size", cfg.batch_size, "at least 2 (a contrastive batch needs negatives)")
    if OBJECTIVES[cfg.loss].queue and None not in (cfg.moco_queue, cfg.batch_size):
        if cfg.moco_queue < cfg.batch_size:
            raise _bad("moco_queue", cfg.moco_queue, f"at least batch_size = {cfg.batch_size} (a step "
                       f"enqueues the whole batch's keys)")
        if cfg.moco_bn_splits > cfg.batch_size:
            raise _bad("moco_bn_splits", cfg.moco_bn_splits, f"at most batch_size = {cfg.batch_size} (groups "
                       f"of at least one key)")
    for name in ("budget", "lr", "temperature", "viewmaker_lr", "overlay_size", "noise_volume"):
        v = getattr(cfg, name)
        if v is not None and not (_number(v) and v > 0):
            raise _bad(name, v, "a positive number")
    ranges = {  # (lo, hi, lo inclusive): where a value means something
        "noise_volume": (0, 1, False),  # the waveform lives in [−1, 1]
        "overlay_opacity": (0, 1, True),  # 0: the overlay is drawn (and labelled) but invisible: a control
        "overlay_size": (OVERLAY_SIZE_MIN, OVERLAYS[cfg.overlay].size_max, True),
        "budget": (0, OVERLAYS[cfg.overlay].budget_max, False),
        "momentum": (0, 0.999, True),
        "ifm_epsilon": (0, 2, True),    # a cosine moves by at most 2
        "moco_momentum": (0, 0.99999, True),
        "spread_alpha": (0, 1, True),
    }
    for name, (lo, hi, closed) in ranges.items():
        v = getattr(cfg, name)
        if v is None:
            continue
        if not _number(v) or v > hi or v < lo or (v == lo and not closed):
            where = f"for overlay={cfg.overlay!r}" if name in ("overlay_size", "budget") else ""
            raise _bad(name, v, f"a number in {'[' if closed else '('}{lo:g}, {hi:g}] {where}".rstrip())
    names = [n.strip() for n in cfg.noise_classes.split(",")] if isinstance(cfg.noise_classes, str) else None
    if (not names or not all(names) or len(set(names)) != len(names)
            or any("/" in n or "\\" in n for n in names)):
        raise _bad("noise_classes", cfg.noise_classes, "a comma-separated list of distinct WAV file stems "
                   "(no paths) in <data_dir>/noise/, e.g. 'babble,traffic,machinery'")
    for name in ("weight_decay", "ifm_alpha", "ce_weight"):
        v = getattr(cfg, name)
        if not (_number(v) and v >= 0):
            raise _bad(name, v, "a non-negative number")
    if not isinstance(cfg.num_res_blocks, int) or not 1 <= cfg.num_res_blocks <= 5:
        raise _bad("num_res_blocks", cfg.num_res_blocks, "an integer from 1 to 5")
    devmod.check(cfg.device, field="config field 'device'")
    _check_images(cfg)
    _check_supervision(cfg)
    return cfg


def _check_images(cfg: Config) -> None:
    """The photos' fields: a folder only with dataset=imagefolder; a size the views and the overlay use."""
    record = OVERLAYS[cfg.overlay]
    if record.modality == "audio":
        for name in ("image_size", "data_path"):
            if getattr(cfg, name) is not None:
                raise _bad(name, getattr(cfg, name), f"None for overlay={cfg.overlay!r} (spoken digits)")
        if cfg.dataset != "cifar10":
            raise _bad("dataset", cfg.dataset, f"'cifar10' (the default) for overlay={cfg.overlay!r}; its "
                       f"recordings are chosen by audio_dataset")
        return
    if cfg.dataset == "imagefolder" and not cfg.data_path:
        raise _bad("data_path", cfg.data_path, "the folder of your images (<data_path>/<class>/<image>) with "
                   "dataset='imagefolder'")
    if cfg.dataset == "cifar10" and cfg.data_path is not None:
        raise _bad("data_path", cfg.data_path, "None with dataset='cifar10' (its files are found in "
                   "data_dir); set dataset='imagefolder' to read your own images")
    s = cfg.image_size
    if s is not None and (s % 4 or not max(16, record.min_side) <= s <= 1024):
        raise _bad("image_size", s, f"a multiple of 4 from {max(16, record.min_side)} to 1024 for "
                   f"overlay={cfg.overlay!r} (the viewmaker halves the side twice"
                   + (f"; the {cfg.overlay} overlay is illegible below {record.min_side} px)"
                      if record.min_side > 16 else ")"))
    if cfg.loader_workers is not None and cfg.loader_workers < 0:
        raise _bad("loader_workers", cfg.loader_workers, "0 (decode in this process) or more, or None")


def _check_supervision(cfg: Config) -> None:
    """A supervised loss needs labels, labels need a supervised loss, and the labels must exist."""
    supervised = [n for n, o in OBJECTIVES.items() if o.supervised]  # the objective records say which
    if OBJECTIVES[cfg.loss].supervised and cfg.supervise is None:
        raise ConfigError(f"config field 'loss' = {cfg.loss!r} is supervised and needs labels: set supervise "
                          f"to 'coarse', 'main' or 'alt' (or use a self-supervised loss: "
                          f"{', '.join(n for n in OBJECTIVES if n not in supervised)})")
    if cfg.supervise is not None and not OBJECTIVES[cfg.loss].supervised:
        raise ConfigError(f"config field 'supervise' = {cfg.supervise!r} needs a supervised loss, but loss = "
                          f"{cfg.loss!r}: set loss to one of {', '.join(supervised)}, or supervise=None")
    if cfg.supervise == "coarse" and (cfg.overlay in AUDIO_OVERLAYS or cfg.dataset != "cifar10"):
        raise _bad("supervise", cfg.supervise,
                   "main or alt here (the coarse labels, vehicles and animals, exist for CIFAR-10 only)")
    if cfg.supervise == "alt" and cfg.overlay == "none":
        raise _bad("supervise", cfg.supervise,
                   "coarse or main with overlay='none' (it has no alternate label)")
    if cfg.ce_weight and cfg.loss not in ("supcon", "spread"):
        raise _bad("ce_weight", cfg.ce_weight,
                   "0 unless loss is supcon or spread (ae always has its CE head)")


def resolve(cfg: Config, cuda_available: bool | None = None) -> Config:
    """Fill every ``None`` from the preset, the overlay and the environment; validate.

    ``subset``/``test_subset`` = "all" stay "all" (every item), so a quick run can ask for the full
    data set; ``size(value)`` turns them into a count or None."""
    import torch

    validate(cfg)
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    preset = cfg.preset if cfg.preset != "auto" else ("paper" if cuda_available else "quick")
    values = dataclasses.asdict(cfg)
    values["preset"] = preset
    preset_values = dict(PRESETS[preset])
    if cfg.overlay in AUDIO_OVERLAYS:
        preset_values = {**preset_values, **AUDIO_REFERENCE_VIEWS, **AUDIO_PRESETS.get(preset, {})}
        preset_values.pop("image_size", None)  # log-mels are 64 × 64
    if cfg.dataset == "imagefolder":  # a folder is used whole: the presets' subsets are CIFAR-10's
        preset_values.update(subset="all", test_subset="all")
    for key, val in preset_values.items():
        if values[key] is None:
            values[key] = val
    if values["budget"] is None:
        values["budget"] = OVERLAYS[cfg.overlay].budget
    if values["temperature"] is None:
        values["temperature"] = OBJECTIVES[cfg.loss].temperature
    if values["image_size"] is None and OVERLAYS[cfg.overlay].modality == "image":
        values["image_size"] = NATIVE_SIDE[cfg.dataset]
    if values["projection_head"] is None:
        values["projection_head"] = OBJECTIVES[cfg.loss].mlp_head
    if values["data_dir"] is None:
        values["data_dir"] = default_data_dir()
    if values["out_dir"] is None:
        values["out_dir"] = str(Path("runs") / default_run_name(cfg))
    if values["device"] == "auto":
        values["device"] = "cuda" if cuda_available else "cpu"
    return validate(Config(**values))


def default_run_name(cfg: Config) -> str:
    """<overlay>-<views>-seed<seed>, with the loss (and the supervised labels) when not the default."""
    loss = "" if cfg.loss == Config.loss else f"-{cfg.loss}" + (f"-{cfg.supervise}" if cfg.supervise else "")
    return f"{cfg.overlay}-{cfg.views}{loss}-seed{cfg.seed}"


def size(value: int | str | None) -> int | None:
    """A resolved subset/test_subset as a count, or None for every item."""
    return None if value in (None, "all") else value


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def project_path(p: str | os.PathLike) -> Path:
    """A relative path that does not exist from the working directory but does from the project
    root (JupyterLab starts kernels in ``notebooks/``) resolves against the project root."""
    path = Path(p)
    if path.is_absolute() or path.exists() or not (PROJECT_ROOT / path).exists():
        return path
    return PROJECT_ROOT / path


def default_data_dir() -> str:
    return os.environ.get("FEATDROP_DATA") or str(project_path("data"))
