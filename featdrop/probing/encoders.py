"""Encoder specs: any frozen image encoder as a function from [0, 1] pixels to features.

- ``run:RUN_DIR``: a featdrop run's encoder, as the run's own probes see it (CIFAR-normalised
  pixels, pooled features, eval mode);
- ``torchvision:NAME[:WEIGHTS]``: a ``torchvision.models`` ImageNet classifier with its last Linear
  removed, and the preprocessing its weights document (resize, centre crop, ImageNet
  normalisation). WEIGHTS defaults to DEFAULT; ``none`` is a random initialisation, given DEFAULT's
  preprocessing (the same network on the same inputs: a control for the trained weights);
- ``file:PATH.pt``: a TorchScript module mapping (B, 3, 32, 32) pixels in [0, 1] to (B, D).

Weights that are absent and cannot be downloaded raise one WeightsNotFoundError naming the file and
the folder to put it in.
"""
from __future__ import annotations

import dataclasses
import difflib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .. import config as cfgmod
from .. import rundir
from ..data.records import IMAGE_OVERLAYS
from ..errors import SpecError, WeightsNotFoundError
from ..train import checkpoint
from ..views.expert import normalize

SCHEMES = ("run", "torchvision", "file")
SPEC_HELP = ("run:RUN_DIR, torchvision:NAME[:WEIGHTS] (WEIGHTS: DEFAULT, a weights name or none) "
             "or file:PATH.pt")


@dataclass
class Encoder:
    model: Callable                  # (B, 3, H, W) float, after ``preprocess`` → (B, D)
    preprocess: Callable | None      # (B, 3, 32, 32) float in [0, 1] → the model's input
    spec: str
    description: str
    run_config: dict | None = None   # run: specs, the run's config (its overlay, seed, subsets)
    batch_size: int | None = None    # images per forward pass (None: chosen by the device and input size)
    amp: bool = True                 # bf16 autocast on CUDA (off for run:, whose probes ran in fp32)


class RunFeatures(nn.Module):
    """A featdrop encoder as the run's probes see it: [0, 1] pixels → CIFAR-normalised → pooled (B, D)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        return self.encoder.features(normalize(x))[0]


def load_encoder(spec: str, device: str = "cpu", seed: int = 0) -> Encoder:
    """``run:RUN_DIR`` | ``torchvision:NAME[:WEIGHTS]`` | ``file:PATH.pt`` → an Encoder on ``device``.
    ``seed``: the random initialisation of ``torchvision:NAME:none`` (the global RNG is left untouched)."""
    scheme, sep, rest = str(spec).partition(":")
    if not sep or scheme not in SCHEMES or not rest:
        raise SpecError(f"encoder spec {spec!r} is invalid: allowed {SPEC_HELP}")
    if scheme in ("run", "file"):  # a relative path also from notebooks/, where JupyterLab starts kernels
        path = cfgmod.project_path(rest)
        return _run_encoder(spec, path, device) if scheme == "run" else _file_encoder(spec, path, device)
    name, _, weights = rest.partition(":")
    return _torchvision_encoder(spec, name, weights or "DEFAULT", device, seed)


def _run_encoder(spec: str, run_dir: Path, device: str) -> Encoder:
    missing = [f for f in ("config.json", "checkpoint.pt") if not (run_dir / f).exists()]
    if missing:
        raise SpecError(f"encoder spec {spec!r}: {run_dir} is not a featdrop run directory "
                        f"(no {' or '.join(missing)}); "
                        f"allowed run:RUN_DIR with a finished run's config.json and checkpoint.pt")
    if rundir.read_json(run_dir / "config.json").get("overlay") not in IMAGE_OVERLAYS:
        raise SpecError(f"encoder spec {spec!r}: an audio run; the suppression report probes image encoders")
    encoder, cfg = checkpoint.load_encoder(run_dir, device)  # the weights only: no data, no trainer
    about = (f"featdrop run {run_dir} ({cfg.encoder}, {cfg.views} views, overlay {cfg.overlay}, "
             f"{cfg.epochs} epochs)")
    # batches of 1024 in fp32, as the run's own evaluation: its probe numbers come back exactly
    return Encoder(RunFeatures(encoder), None, spec, about, dataclasses.asdict(cfg), batch_size=1024,
                   amp=False)


def _file_encoder(spec: str, path: Path, device: str) -> Encoder:
    if not path.is_file():
        raise SpecError(f"encoder spec {spec!r}: no file {path}; allowed file:PATH.pt, a TorchScript module "
                        f"(torch.jit.script(model).save(PATH)) mapping (B, 3, 32, 32) pixels in [0, 1] "
                        f"to (B, D)")
    try:
        model = torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise SpecError(f"encoder spec {spec!r}: {path} is not a TorchScript module ({type(exc).__name__}); "
                        f"save one with torch.jit.script(model).save(PATH) or "
                        f"torch.jit.trace(model, x).save(PATH)") from None
    return Encoder(model, None, spec, f"TorchScript module {path}")


def _torchvision_encoder(spec: str, name: str, weights: str, device: str, seed: int) -> Encoder:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)  # the ImageNet classifiers
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        raise SpecError(
            f"encoder spec {spec!r}: unknown torchvision classifier {name!r}; "
            f"{'close matches: ' + ', '.join(close) if close else 'allowed: ' + ', '.join(known)}")
    enum = torchvision.models.get_model_weights(name)
    allowed = ["DEFAULT", *(m for m in enum.__members__ if m != "DEFAULT"), "none"]
    wname = weights.split(".")[-1]  # "ResNet18_Weights.IMAGENET1K_V1" is accepted too
    if wname not in allowed:
        raise SpecError(f"encoder spec {spec!r}: unknown weights {weights!r} for {name}; "
                        f"allowed {', '.join(allowed)}")
    w = None if wname == "none" else enum[wname]
    preprocess = (w or enum.DEFAULT).transforms()  # accepts float (B, 3, H, W) in [0, 1]
    if w is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = torchvision.models.get_model(name, weights=None)
    else:
        model = _pretrained(spec, name, w)
    model = _strip_head(model, spec).to(device).eval()
    crop = getattr(preprocess, "crop_size", ["?"])[0]
    return Encoder(model, preprocess, spec,
                   f"torchvision {name}, weights {w or f'none (random init, seed {seed})'}, "
                   f"head removed; preprocessing of {enum.DEFAULT}: {crop} px, ImageNet normalisation")


def _pretrained(spec: str, name: str, weights):
    import torchvision

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    file = folder / Path(weights.url).name
    timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout if file.exists() else 30)  # a silent firewall fails in 30 s, not hangs
    try:
        return torchvision.models.get_model(name, weights=weights)
    except Exception as exc:  # no network: urllib errors, timeouts
        if file.exists():  # present but unreadable: torch's own error says why
            raise
        raise WeightsNotFoundError(
            f"encoder spec {spec!r} needs the weights file {file.name}, which is not in {folder} and could "
            f"not be downloaded ({type(exc).__name__}: {exc}). Fetch {weights.url} on a machine with network "
            f"and copy it to {file} (or set TORCH_HOME to a folder whose hub/checkpoints/ holds it), or use "
            f"torchvision:{name}:none for a random initialisation.") from None
    finally:
        socket.setdefaulttimeout(timeout)


def _strip_head(model: nn.Module, spec: str) -> nn.Module:
    """Replace the classifier's last Linear (``fc``, ``classifier``, ``heads`` or ``head``) by the
    identity."""
    for attr in ("fc", "classifier", "heads", "head"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Identity())
            return model
        if isinstance(head, nn.Sequential):
            last = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]
            if last:
                # keeps the pooling / norm / flatten before it (ConvNeXt, ViT)
                head[last[-1]] = nn.Identity()
                return model
    raise SpecError(f"encoder spec {spec!r}: found no Linear classifier head (.fc, .classifier, .heads or "
                    f".head) to remove; build the model yourself and pass it to "
                    f"suppression.report(model, preprocess=...)")
