"""Probing a frozen encoder under each overlay: the computation behind the suppression report
(``featdrop.probing.suppression``). Features of each overlay's fixed random training and test images are
computed once, in batches on the device, and cached for the probes of the CIFAR-10 class (main), the
overlay (alternate) and vehicles vs animals (coarse); ``suppression_main = probe_main(none) −
probe_main(overlay)``."""
from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn as nn

from .. import config as cfgmod
from .. import device as devmod
from .. import probe as probemod
from ..data.images import ImageOverlaySet, Source
from ..data.records import IMAGE_OVERLAYS
from ..data.records import OVERLAYS as RECORDS
from ..errors import SpecError
from ..views.expert import expert_views
from .encoders import SPEC_HELP, Encoder, load_encoder

OVERLAYS = IMAGE_OVERLAYS                      # none, shapes, digits, letters: every image overlay's record


class Features(nn.Module):
    """Preprocess + model in chunks of ``batch``; ``features`` gives (f, f), the interface of the probes."""

    def __init__(self, model: Callable, preprocess: Callable | None, batch: int, autocast: bool):
        super().__init__()
        self.model, self.preprocess, self.batch, self.autocast = model, preprocess, batch, autocast

    @torch.no_grad()
    def forward(self, x):  # (B, 3, 32, 32) in [0, 1] → (B, D) float
        out = []
        for chunk in x.split(self.batch):
            chunk = self.preprocess(chunk) if self.preprocess is not None else chunk
            chunk = devmod.channels_last(chunk, enabled=chunk.is_cuda)
            with devmod.autocast(chunk.device, self.autocast):
                f = self.model(chunk)
            if not (torch.is_tensor(f) and f.dim() == 2 and f.shape[0] == len(chunk)):
                shape = tuple(f.shape) if torch.is_tensor(f) else type(f).__name__
                raise SpecError(f"the encoder returned {shape} for a batch of {len(chunk)} images: "
                                f"allowed (B, D) features, one row per image (pool or flatten a feature map "
                                f"inside the module)")
            out.append(f.float())
        return torch.cat(out)

    def features(self, x):
        f = self(x)
        return f, f


# --------------------------------------------------------------------------------------- report
def _check(overlays, subset, test_subset, probe, seed, source: Source = Source()):
    if not overlays:
        raise SpecError(f"overlays={overlays!r} is invalid: allowed one or more of {', '.join(OVERLAYS)}")
    for name in overlays:
        if name not in OVERLAYS:
            raise SpecError(f"overlays: {name!r} is invalid: allowed {', '.join(OVERLAYS)}")
    # CIFAR-10's split sizes; a folder's are checked as it loads (featdrop.data.images.check_subset)
    bounds = (50_000, 10_000) if source.dataset == "cifar10" else (float("inf"),) * 2
    for name, value, most in (("subset", subset, bounds[0]), ("test_subset", test_subset, bounds[1])):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 < value <= most):
            allowed = f"an integer from 1 to {most}" if most != float("inf") else "a positive integer"
            raise SpecError(f"{name}={value!r} is invalid: allowed {allowed} or None (all)")
    if probe not in cfgmod.PROBES:
        raise SpecError(f"probe={probe!r} is invalid: allowed {', '.join(cfgmod.PROBES)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError(f"seed={seed!r} is invalid: allowed an integer")


def report(encoder, *, preprocess=None, overlays=OVERLAYS, subset=None, test_subset=None, probe="fast",
           device="auto", seed=0, data_dir=None, batch_size=None, probe_epochs=100, done=None, on_row=None,
           source: Source = Source()):
    """Probe a frozen encoder under each overlay; returns a DataFrame with one row per overlay.

    ``encoder``: an ``nn.Module`` or callable mapping float (B, 3, 32, 32) in [0, 1] (after ``preprocess``)
    to (B, D); an Encoder from :func:`load_encoder`; or a spec string. Features of the fixed random
    ``subset`` / ``test_subset`` (None: all) are computed once per overlay, in batches on the device,
    and cached for the probes. ``probe="reference"`` trains an SGD probe for ``probe_epochs`` on expert
    views of the training images (the reference protocol's augmentation; a foreign encoder has no views
    of its own). ``suppression_*`` need the ``none`` overlay (NaN without it). ``done``: rows of overlays
    finished before (by overlay), reused; ``on_row(row, features)``: called as each overlay finishes, with
    its test features and labels (for a map), so a caller can print and save as it goes. ``source``: the
    photos (``featdrop.data.images.Source``: CIFAR-10, or an image folder, at its image size).
    """
    import pandas as pd

    overlays = [overlays] if isinstance(overlays, str) else list(overlays)
    _check(overlays, subset, test_subset, probe, seed, source)
    dev = devmod.resolve(device)
    if isinstance(encoder, str):
        encoder = load_encoder(encoder, str(dev))
    amp = True
    if isinstance(encoder, Encoder):
        preprocess = encoder.preprocess if preprocess is None else preprocess
        batch_size, amp, encoder = batch_size or encoder.batch_size, encoder.amp, encoder.model
    if not callable(encoder):
        raise SpecError(f"encoder={encoder!r} is invalid: allowed an nn.Module or callable, an Encoder or a "
                        f"spec ({SPEC_HELP})")
    if isinstance(encoder, nn.Module):
        encoder = encoder.to(dev).eval()
        if dev.type == "cuda":
            encoder = encoder.to(memory_format=torch.channels_last)
    batch = batch_size or (1024 if preprocess is None else 512 if dev.type == "cuda" else 64)
    feats = Features(encoder, preprocess, batch, amp)
    side = source.image_size
    feats(torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0)).to(dev))  # output shape
    data_dir = data_dir or cfgmod.default_data_dir()
    rows = []
    for name in overlays:
        if done and name in done:  # finished before (an interrupted report, run again): not recomputed
            rows.append(done[name])
            continue
        row, features = _one_overlay(feats, name, dev, data_dir, subset, test_subset, probe, seed,
                                     probe_epochs, source)
        rows.append(row)
        if on_row is not None:
            on_row(row, features)
    df = pd.DataFrame(rows)
    base = df[df.overlay == "none"]
    for label in ("main", "coarse"):
        df[f"suppression_{label}"] = (base[f"probe_{label}"].iloc[0] - df[f"probe_{label}"] if len(base)
                                      else math.nan)
    cols = ["overlay", "probe_main", "chance_main", "suppression_main", "probe_alt", "chance_alt",
            "alt_classes", "probe_coarse", "chance_coarse", "suppression_coarse", "feature_dim", "n_train",
            "n_test", "features_s", "probe_s", "time_s"]
    df = df[cols + [c for c in ("map_knn_main", "map_knn_alt") if c in df]]
    df.attrs.update(device=str(dev), probe=probe, seed=seed, subset=subset, test_subset=test_subset)
    return df


def _one_overlay(feats, name, dev, data_dir, subset, test_subset, probe, seed, probe_epochs, source):
    """One overlay's row of the report, and (test features, main labels, alt labels) for its map."""
    t0 = time.perf_counter()
    kw = dict(seed=seed, download=False, device=dev, source=source)
    train_set = ImageOverlaySet(name, "train", data_dir, subset=subset, **kw)
    train, test = train_set.draw(0), ImageOverlaySet(name, "test", data_dir, subset=test_subset, **kw).draw(0)
    ntr, nte = len(train), len(test)
    t1 = time.perf_counter()
    if probe == "fast":  # the same extraction as Trainer.clean_features: batches of 1024, eval mode
        ftr = probemod.extract(feats, lambda sl: train.images[sl].float() / 255, ntr)
        fte = probemod.extract(feats, lambda sl: test.images[sl].float() / 255, nte)
        dim = ftr.shape[1]
    else:  # the reference probe extracts its own; the map needs the test features
        fte = probemod.extract(feats, lambda sl: test.images[sl].float() / 255, nte)
        dim = fte.shape[1]
    devmod.sync(dev)
    t2 = time.perf_counter()
    alt_classes = RECORDS[name].num_alt_classes()
    row = {"overlay": name, "alt_classes": alt_classes, "feature_dim": dim, "n_train": ntr, "n_test": nte}
    labels = {"main": (train.labels, test.labels, len(train_set.classes)),
              "alt": (train.alt_labels, test.alt_labels, alt_classes)}
    if train.coarse_labels is not None:  # vehicles vs animals: CIFAR-10's
        labels["coarse"] = (train.coarse_labels, test.coarse_labels, 2)
    else:
        row = {**row, "probe_coarse": math.nan, "chance_coarse": math.nan}
    for label, (ytr, yte, k) in labels.items():
        if k < 2:  # overlay "none": one constant alternate label, nothing to probe
            row[f"probe_{label}"] = row[f"chance_{label}"] = math.nan
            continue
        if probe == "fast":
            row[f"probe_{label}"] = probemod.logistic_regression(ftr, ytr, fte, yte, k)
        else:
            g = torch.Generator(device=dev).manual_seed(seed)
            row[f"probe_{label}"] = probemod.reference_probe(
                feats, lambda idx: expert_views(train.images[idx].float(), g, in_scale=1 / 255), ntr, ytr,
                lambda sl: test.images[sl].float() / 255, nte, yte, k, epochs=probe_epochs, generator=g)
        row[f"chance_{label}"] = (torch.bincount(yte, minlength=k).max() / len(yte)).item()
    t3 = time.perf_counter()
    return ({**row, "features_s": t2 - t1, "probe_s": t3 - t2, "time_s": t3 - t0},
            (fte, test.labels, test.alt_labels))
