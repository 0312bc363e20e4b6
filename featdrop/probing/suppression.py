"""Bring your own encoder: does it still see the photo's class when an easy feature sits on top?

Feature suppression (Tamkin, Glasgow, He & Goodman, "Feature Dropout", NeurIPS 2023; Chen, Luo &
Li, "Intriguing properties of contrastive losses", NeurIPS 2021): an easy feature present in every
input can crowd a harder one out of a representation. ``report`` probes a frozen encoder (any
module, or a spec of ``featdrop.probing.encoders``: ``run:``, ``torchvision:``, ``file:``) on CIFAR-10 under
each overlay: linear probes for the CIFAR-10 class (main), the overlay (alternate) and vehicles vs
animals (coarse), and

    suppression_main = probe_main(none) − probe_main(overlay)

the class accuracy that the overlay's presence costs. ``featdrop suppression SPEC`` prints
the table and writes ``suppression.csv`` and a bar chart.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .. import config as cfgmod
from .. import device as devmod
from .. import probe as probemod
from .. import rundir
from ..data.base import coarse_labels
from ..data.images import ImageOverlaySet
from ..data.records import IMAGE_OVERLAYS
from ..data.records import OVERLAYS as RECORDS
from ..errors import SpecError
from ..views.expert import expert_views
from ..viz.compare import suppression_bars
from .encoders import SPEC_HELP, Encoder, load_encoder

OVERLAYS = IMAGE_OVERLAYS                      # none, shapes, digits, letters: every image overlay's record
# CLI defaults (train, test images per overlay). CPU: 4 overlays × 600 images through a ResNet-18 at 224 px
# cost 137 CPU-seconds (measured, one thread), about 2.5 min on an idle 2-core machine. GPU: 10k + 10k.
CPU_SUBSETS, CUDA_SUBSETS = (400, 200), (10_000, 10_000)
PARAMETERS = ("spec", "overlays")              # the notebook's parameters that are not config fields


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
def _check(overlays, subset, test_subset, probe, seed):
    if not overlays:
        raise SpecError(f"overlays={overlays!r} is invalid: allowed one or more of {', '.join(OVERLAYS)}")
    for name in overlays:
        if name not in OVERLAYS:
            raise SpecError(f"overlays: {name!r} is invalid: allowed {', '.join(OVERLAYS)}")
    for name, value, most in (("subset", subset, 50_000), ("test_subset", test_subset, 10_000)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 < value <= most):
            raise SpecError(f"{name}={value!r} is invalid: allowed an integer from 1 to {most} or None (all)")
    if probe not in cfgmod.PROBES:
        raise SpecError(f"probe={probe!r} is invalid: allowed {', '.join(cfgmod.PROBES)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError(f"seed={seed!r} is invalid: allowed an integer")


def report(encoder, *, preprocess=None, overlays=OVERLAYS, subset=None, test_subset=None, probe="fast",
           device="auto", seed=0, data_dir=None, batch_size=None, probe_epochs=100, verbose=False):
    """Probe a frozen encoder under each overlay; returns a DataFrame with one row per overlay.

    ``encoder``: an ``nn.Module`` or callable mapping float (B, 3, 32, 32) in [0, 1] (after ``preprocess``)
    to (B, D); an Encoder from :func:`load_encoder`; or a spec string. Features of the fixed random
    ``subset`` / ``test_subset`` (None: all) are computed once per overlay, in batches on the device,
    and cached for the probes. ``probe="reference"`` trains an SGD probe for ``probe_epochs`` on expert
    views of the training images (the reference protocol's augmentation; a foreign encoder has no views
    of its own). ``suppression_*`` need the ``none`` overlay (NaN without it).
    """
    import pandas as pd

    overlays = [overlays] if isinstance(overlays, str) else list(overlays)
    _check(overlays, subset, test_subset, probe, seed)
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
    feats(torch.rand(2, 3, 32, 32, device=dev,
                     generator=torch.Generator().manual_seed(0)))  # its output's shape
    data_dir = data_dir or cfgmod.default_data_dir()
    rows = []
    for name in overlays:
        rows.append(_one_overlay(feats, name, dev, data_dir, subset, test_subset, probe, seed, probe_epochs))
        if verbose:
            r = rows[-1]
            rate = (r["n_train"] + r["n_test"]) / max(r["features_s"], 1e-9)
            print(f"{name}: {r['n_train']} + {r['n_test']} images, features {r['features_s']:.1f} s "
                  f"({rate:.0f} img/s), probes {r['probe_s']:.1f} s", flush=True)
    df = pd.DataFrame(rows)
    base = df[df.overlay == "none"]
    for label in ("main", "coarse"):
        df[f"suppression_{label}"] = (base[f"probe_{label}"].iloc[0] - df[f"probe_{label}"] if len(base)
                                      else math.nan)
    cols = ["overlay", "probe_main", "chance_main", "suppression_main", "probe_alt", "chance_alt",
            "alt_classes", "probe_coarse", "chance_coarse", "suppression_coarse", "feature_dim", "n_train",
            "n_test", "features_s", "probe_s", "time_s"]
    df = df[cols]
    df.attrs.update(device=str(dev), probe=probe, seed=seed, subset=subset, test_subset=test_subset)
    return df


def _one_overlay(feats, name, dev, data_dir, subset, test_subset, probe, seed, probe_epochs) -> dict:
    t0 = time.perf_counter()
    kw = dict(seed=seed, download=False, device=dev)
    train = ImageOverlaySet(name, "train", data_dir, subset=subset, **kw).draw(0)
    test = ImageOverlaySet(name, "test", data_dir, subset=test_subset, **kw).draw(0)
    ntr, nte = len(train), len(test)
    t1 = time.perf_counter()
    if probe == "fast":  # the same extraction as Trainer.clean_features: batches of 1024, eval mode
        ftr = probemod.extract(feats, lambda sl: train.images[sl].float() / 255, ntr)
        fte = probemod.extract(feats, lambda sl: test.images[sl].float() / 255, nte)
        dim = ftr.shape[1]
    else:
        dim = feats(test.images[:1].float() / 255).shape[1]
    devmod.sync(dev)
    t2 = time.perf_counter()
    alt_classes = RECORDS[name].num_alt_classes()
    labels = {"main": (train.labels, test.labels, 10),
              "alt": (train.alt_labels, test.alt_labels, alt_classes),
              "coarse": (coarse_labels(train.labels), coarse_labels(test.labels), 2)}
    row = {"overlay": name, "alt_classes": alt_classes, "feature_dim": dim, "n_train": ntr, "n_test": nte}
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
    return {**row, "features_s": t2 - t1, "probe_s": t3 - t2, "time_s": t3 - t0}


# ------------------------------------------------------------------------------- figure, CLI, notebook
def default_settings(encoder: Encoder, device: torch.device, subset=None, test_subset=None, seed=None):
    """CLI defaults: a run's own seed and subsets (its probe numbers come back); else by device."""
    run = encoder.run_config
    if run is not None:
        given = zip(("subset", "test_subset", "seed"), (subset, test_subset, seed))
        return tuple(run[k] if v is None else v for k, v in given), "the run's own"
    n_train, n_test = CUDA_SUBSETS if device.type == "cuda" else CPU_SUBSETS
    chosen = (n_train if subset is None else subset, n_test if test_subset is None else test_subset,
              0 if seed is None else seed)
    return chosen, f"the {device.type.upper()} default"


def slug(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in spec.replace(":", "-")).strip("-")[:80]


def run(spec: str, *, overlays=OVERLAYS, subset=None, test_subset=None, probe="fast", device="auto",
        seed=None, data_dir=None, out_dir=None, batch_size=None):
    """What the CLI and the notebook do: report, print, write ``out_dir``/suppression.csv and .png."""
    overlays = [overlays] if isinstance(overlays, str) else list(overlays)
    _check(overlays, subset, test_subset, probe, 0 if seed is None else seed)
    dev = devmod.resolve(device)
    t0 = time.perf_counter()
    encoder = load_encoder(spec, str(dev), seed=0 if seed is None else seed)
    (n_train, n_test, seed), why = default_settings(encoder, dev, subset, test_subset, seed)
    out = Path(out_dir or Path("runs") / "suppression" / slug(spec))
    print(f"encoder: {encoder.description}\ndevice {dev}; overlays {', '.join(overlays)}; probe {probe}; "
          f"seed {seed}\n"
          f"images per overlay: {n_train or 'all'} train + {n_test or 'all'} test ({why}; "
          f"set --subset / --test-subset)\nout_dir {out}", flush=True)
    table = report(encoder, overlays=overlays, subset=n_train, test_subset=n_test, probe=probe,
                   device=str(dev), seed=seed, data_dir=data_dir, batch_size=batch_size, verbose=True)
    table.attrs.update(spec=spec, total_s=time.perf_counter() - t0, out_dir=str(out))
    rundir.atomic_write_text(out / "suppression.csv", table.to_csv(index=False))
    figure(table)
    print(table.round(3).to_string(index=False))
    print(f"total {table.attrs['total_s']:.0f} s; wrote {out / 'suppression.csv'} and "
          f"{out / 'suppression.png'}")
    return table


def figure(table):
    """The bar chart of a ``run`` table, saved as ``suppression.png`` in its out_dir; returns the figure."""
    a, r = table.attrs, table.iloc[0]
    fig = suppression_bars(table, f"{a.get('spec', '')}: {r.n_train} train / {r.n_test} test images per "
                           f"overlay, {a['probe']} probe")
    if a.get("out_dir"):
        rundir.save_figure(fig, Path(a["out_dir"]) / "suppression.png")  # closed: shown once in a notebook
    return fig


EXAMPLES = """examples:
  featdrop suppression torchvision:resnet18:none --out runs/suppression/resnet18-none
  featdrop suppression run:runs/shapes-expert-seed0
  featdrop suppression file:my_encoder.pt --overlays none shapes --subset 5000 --test-subset 2000

Probes are noisy on small subsets: with 200 test images one accuracy has a standard error of about 0.03;
use --subset 5000 --test-subset 2000 or more (a GPU) before reading small suppressions."""


def main(argv=None, prog: str = "featdrop suppression") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help=SPEC_HELP)
    p.add_argument("--subset", type=int, help=f"training images per overlay (default: a run's own; CPU "
                   f"{CPU_SUBSETS[0]}, CUDA {CUDA_SUBSETS[0]})")
    p.add_argument("--test-subset", type=int,
                   help=f"test images per overlay (CPU {CPU_SUBSETS[1]}, CUDA {CUDA_SUBSETS[1]})")
    p.add_argument("--overlays", nargs="+", default=list(OVERLAYS),
                   help="include none: suppression is relative to it")
    p.add_argument("--probe", default="fast", choices=cfgmod.PROBES,
                   help="fast: logistic regression on cached features; reference: 100 SGD epochs on expert "
                        "views")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, help="overlay draws (default: a run's own seed, else 0)")
    p.add_argument("--batch-size", type=int,
                   help="images per forward pass (default 64 on CPU at ImageNet size)")
    p.add_argument("--data-dir", help="default: $FEATDROP_DATA, else ./data")
    p.add_argument("--out", help="output folder (default runs/suppression/<spec>)")
    a = p.parse_args(argv)
    run(a.spec, overlays=a.overlays, subset=a.subset, test_subset=a.test_subset, probe=a.probe,
        device=a.device, seed=a.seed, data_dir=a.data_dir, out_dir=a.out, batch_size=a.batch_size)
    return 0
