"""The oracles of a run: one reader for the overlay's label (``alt``) and one for the main label (``main``),
trained once per overlay configuration and cached beside the data cache.

The configuration is (overlay, opacity, size) for images, and (overlay, seed) plus the noise settings for
audio; the reader's recipe has a version and its crop setting (NEAR_FULL) is in its name, so a changed recipe
trains anew. Image readers do not depend on the run's seed: the seed only decides which overlay goes on which
photo and where, and a reader trained on the composites of seed 0 reads those of seeds 1 and 2 as well as
their own readers do (measured on shapes at opacity 1: 0.9954 and 0.9937 of the overlay against its own
0.9942; 0.6493 and 0.6513 of the class against 0.6512), so one reader per (overlay, opacity, size) serves
every seed and a three-seed grid trains it once. Readers train on the whole training split (images: all 50,000
CIFAR-10 training photos with the overlay composited by seed 0; audio: the run's training clips) and report
their clean accuracy on the test split, printed and stored with the weights. Two runs that need the same
oracle at once wait for each other (a file lock): it is trained once.

An overlay with nothing to read (``none``, or opacity 0) has no ``alt`` oracle.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import rundir, runlock
from ..config import Config
from ..data import records
from ..data.images import ImageOverlaySet
from ..views.expert import normalize
from . import reader as readers

VERSION = 1
# The fraction of an overlay reader's crops kept near full size (reader.keeping_crops), part of its cache
# name: digits only, whose reader underfit clean images when every crop enlarged the 10-px digit (figures
# below, at STEPS)
NEAR_FULL = {"digits": 0.5}
BATCH = 256
# SGD steps of batch 256 per reader, its whole budget: the same on every machine, so a cached reader does not
# depend on where it was trained. On the 2-core CPU a reader trains at about 1,300 images/s: 1,000 steps take
# about 3.3 min. By (overlay, label); an overlay without an entry takes its modality's.
# Glyphs need more: letters read 0.884 of clean test composites after 800 steps and 0.963 after 1,600
# (about 5 min). Digits, on the crops of version 1, 0.74 after 800, 0.85 after 1,600 and 0.878 after 3,000
# steps (about 10 min), reading their own clean training composites no better (0.882); with half the crops
# near full size (NEAR_FULL) 0.917 after 1,600 steps, and 3,000 steps is kept.
STEPS = {("image", "alt"): 800, ("image", "main"): 2000, ("audio", "alt"): 300, ("audio", "main"): 600,
         ("digits", "alt"): 3000, ("letters", "alt"): 1600}


def near_full(cfg: Config, label: str) -> float:
    """The share of a reader's crops kept near full size: the overlay's NEAR_FULL for its label, else 0."""
    return NEAR_FULL.get(cfg.overlay, 0.0) if label == "alt" else 0.0


def steps_for(cfg: Config, label: str) -> int:
    modality = records.get(cfg.overlay).modality
    return STEPS.get((cfg.overlay, label), STEPS[(modality, label)])


@dataclass
class Oracle:
    """A trained reader of one label and what it reaches on clean test inputs."""
    label: str                    # "alt" (the overlay's label) | "main" (the class / spoken digit)
    reader: readers.Reader
    accuracy: float               # on the clean test split
    num_classes: int
    meta: dict

    def read(self, inputs: torch.Tensor) -> torch.Tensor:
        """The label (N,) this oracle reads from encoder inputs (N, C, S, S)."""
        return readers.read(self.reader, inputs)


def visible(cfg: Config) -> bool:
    """The overlay shows in the images: not ``none``, not opacity 0."""
    return records.get(cfg.overlay).has_alt_label() and cfg.overlay_opacity > 0


def data_seed(cfg: Config) -> int:
    """The seed of the composites a reader trains on: 0 for every image run (see the module's docstring),
    the run's own for audio (its clips and noise draws are the run's)."""
    return cfg.seed if records.get(cfg.overlay).modality == "audio" else 0


def key(cfg: Config, label: str) -> str:
    """The cache name of a run's ``label`` oracle: everything its training data depends on. Images without a
    visible overlay are the plain photos whatever the overlay, size or seed: one oracle serves them all."""
    if records.get(cfg.overlay).modality == "image" and not visible(cfg):
        return f"plain-{label}-{steps_for(cfg, label)}steps-v{VERSION}"
    parts = [cfg.overlay, label, f"opacity{cfg.overlay_opacity:g}", f"size{cfg.overlay_size:g}",
             f"seed{data_seed(cfg)}"]
    if records.get(cfg.overlay).modality == "audio":
        parts += [cfg.audio_dataset, cfg.noise_classes.replace(",", "+"), f"vol{cfg.noise_volume:g}",
                  cfg.noise_draw, f"subset{cfg.subset}"]
    if near_full(cfg, label):
        parts.append(f"nearfull{near_full(cfg, label):g}")
    return "-".join(parts) + f"-{steps_for(cfg, label)}steps-v{VERSION}"


def path(cfg: Config, label: str) -> Path:
    return Path(cfg.data_dir) / "featdrop_cache" / "oracles" / f"{key(cfg, label)}.pt"


def labels_to_read(cfg: Config) -> list[str]:
    """"main", and "alt" unless the overlay shows nothing to read (none, or opacity 0)."""
    return ["alt", "main"] if visible(cfg) else ["main"]


def for_run(cfg: Config, data, device: torch.device, say=print, train: bool = True) -> dict[str, Oracle]:
    """The run's oracles by label, each loaded from the cache or trained once (and then cached); with
    ``train=False`` only the cached ones (the view explorer: no minutes of training to look at views)."""
    return {label: load_or_train(cfg, label, data, device, say) for label in labels_to_read(cfg)
            if train or path(cfg, label).exists()}


def load_or_train(cfg: Config, label: str, data, device: torch.device, say=print) -> Oracle:
    file = path(cfg, label)
    with runlock.waiting_lock(file.with_suffix(".lock")):  # a second run needing it waits, then loads it
        if file.exists():
            blob = torch.load(file, map_location=device, weights_only=False)
            oracle = _oracle(blob, device)
            say(f"oracle {label}: {file.name}, cached (clean test accuracy {oracle.accuracy:.3f})")
            return oracle
        steps = steps_for(cfg, label)
        say(f"oracle {label}: training {file.name} once for this overlay configuration ({steps} steps; "
            f"about {steps * BATCH / 1300 / 60:.0f} min on a 2-core CPU), cached in {file.parent}")
        blob = train(cfg, label, data, device, steps, say)
        rundir.atomic_save(blob, file)
    oracle = _oracle(blob, device)
    say(f"oracle {label}: clean test accuracy {oracle.accuracy:.3f} (chance {1 / oracle.num_classes:.3f})")
    return oracle


def _oracle(blob: dict, device) -> Oracle:
    reader = readers.Reader(blob["in_channels"], blob["num_classes"], blob["side"]).to(device)
    reader.load_state_dict(blob["state"])
    return Oracle(blob["label"], reader.eval(), blob["accuracy"], blob["num_classes"], blob["meta"])


# ---------------------------------------------------------------------------- training sets
def _image_sets(cfg: Config, device):
    kw = dict(seed=data_seed(cfg), size=cfg.overlay_size, opacity=cfg.overlay_opacity, download=cfg.download,
              device=device)
    return (ImageOverlaySet(cfg.overlay, split, cfg.data_dir, **kw).draw(0) for split in ("train", "test"))


def train(cfg: Config, label: str, data, device, steps: int, say=print) -> dict:
    """Train one reader; returns what the cache stores (weights, accuracy, recipe, time)."""
    record = records.get(cfg.overlay)
    seed = data_seed(cfg)
    g = torch.Generator(device=device).manual_seed(seed * 7_333 + (label == "main"))
    if record.modality == "image":
        tr, te = _image_sets(cfg, device)
        y_tr, y_te = (tr.alt_labels, te.alt_labels) if label == "alt" else (tr.labels, te.labels)
        masks = tr.masks if label == "alt" else None
        near = near_full(cfg, label)

        def batches():
            idx = torch.randint(0, len(y_tr), (BATCH,), generator=g, device=device)
            return readers.image_views(tr.images[idx], g, None if masks is None else masks[idx],
                                       record.copies, near_full=near), y_tr[idx]

        test_inputs = normalize(te.images.float() / 255)
        in_channels, side = 3, 32
    else:
        tr, m = data.train.draw(0), data.modality
        clean_tr = m.clean(tr.images)
        y_tr, y_te = ((tr.alt_labels, data.test.alt_labels) if label == "alt" else
                      (tr.labels, data.test.labels))

        def batches():
            idx = torch.randint(0, len(y_tr), (BATCH,), generator=g, device=device)
            return readers.audio_views(clean_tr[idx], g), y_tr[idx]

        test_inputs = m.clean(data.test.images)
        in_channels, side = 1, 64
    k = record.num_alt_classes(cfg.noise_classes) if label == "alt" else len(record.main_names)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 17)
        reader = readers.Reader(in_channels, k, side).to(device)
    t0 = time.perf_counter()
    seconds = readers.fit(reader, batches, steps, say=say)
    accuracy = (readers.read(reader, test_inputs) == y_te).float().mean().item()
    return {"label": label, "state": reader.state_dict(), "accuracy": accuracy, "num_classes": k,
            "in_channels": in_channels, "side": side,
            "meta": {"key": key(cfg, label), "steps": steps, "batch": BATCH, "train_s": seconds,
                     "total_s": time.perf_counter() - t0, "version": VERSION, "n_test": len(y_te)}}
