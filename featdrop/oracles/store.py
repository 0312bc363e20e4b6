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

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import rundir, runlock
from ..config import Config
from ..data import records
from ..data.images import ImageOverlaySet, Source, class_names
from ..errors import ConfigError
from ..views.expert import normalize
from . import reader as readers
from . import shipped

VERSION = 1
# The fraction of an overlay reader's crops kept near full size (reader.keeping_crops), part of its cache
# name: digits only, whose reader underfit clean images when every crop enlarged the 10-px digit (figures
# below, at STEPS)
NEAR_FULL = {"digits": 0.5}
BATCH = 256
WAIT_SAY_S = 60.0  # a run waiting for another's training of the same reader says so this often
# SGD steps of batch 256 per reader, its whole budget: the same on every machine, so a cached reader does not
# depend on where it was trained. On the 2-core CPU a reader trains at about 1,300 images/s: 1,000 steps take
# about 3.3 min. By (overlay, label); an overlay without an entry takes its modality's.
# Glyphs need more: letters read 0.884 of clean test composites after 800 steps and 0.963 after 1,600
# (about 5 min). Digits, on the crops of version 1, 0.74 after 800, 0.85 after 1,600 and 0.878 after 3,000
# steps (about 10 min), reading their own clean training composites no better (0.882); with half the crops
# near full size (NEAR_FULL) 0.917 after 1,600 steps, and 3,000 steps is kept.
STEPS = {("image", "alt"): 800, ("image", "main"): 2000, ("audio", "alt"): 300, ("audio", "main"): 600,
         ("digits", "alt"): 3000, ("letters", "alt"): 1600}
RECIPE_STEPS = dict(STEPS)  # the step counts as written here (the tests' fixture shortens STEPS)


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
    image = records.get(cfg.overlay).modality == "image"
    photos = Source.of(cfg).tag() if image else ""  # '' for CIFAR-10 at 32 px; else the data set and size
    if image and not visible(cfg):
        return f"{photos}plain-{label}-{steps_for(cfg, label)}steps-v{VERSION}"
    parts = [photos + cfg.overlay, label, f"opacity{cfg.overlay_opacity:g}", f"size{cfg.overlay_size:g}",
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


def recipe(cfg: Config, label: str) -> dict:
    """What a reader's training depends on besides its data (the key names the data): a shipped or cached
    reader is used only when this matches the code's. Change VERSION with anything else in the recipe."""
    return {"version": VERSION, "steps": steps_for(cfg, label), "batch": BATCH,
            "near_full": near_full(cfg, label)}


def for_run(cfg: Config, data, device: torch.device, say=print, train: bool = True) -> dict[str, Oracle]:
    """The run's oracles by label: shipped with featdrop, else from the user's cache, else trained once (and
    then cached). ``train=False``: only the shipped and cached ones (the view explorer: no minutes of
    training to look at views)."""
    out = {}
    for label in labels_to_read(cfg):
        if train or shipped.find(key(cfg, label), recipe(cfg, label)) or path(cfg, label).exists():
            out[label] = load_or_train(cfg, label, data, device, say)
    return out


def load_or_train(cfg: Config, label: str, data, device: torch.device, say=print) -> Oracle:
    """The lookup order: the reader shipped in the package when its key and recipe match exactly; else the
    user's cache (read without a lock, so a read-only shared cache serves); else trained once under a lock
    (a second run that needs it waits, saying so every minute, then loads it) and cached. A damaged cached
    file is moved aside and trained again; a cache that cannot be written is named with the fix."""
    k, file = key(cfg, label), path(cfg, label)
    found = shipped.find(k, recipe(cfg, label))
    if found is not None:
        oracle = _oracle(shipped.load(found, device), device)
        say(f"oracle {label}: {k}, shipped with featdrop (clean test accuracy {oracle.accuracy:.3f})")
        return oracle
    blob = _read_cached(file, device, say)
    if blob is None:
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(runlock.waiting_lock(file.with_suffix(".lock"), say=say,
                                                        what=f"training the {label} oracle {k}",
                                                        every_s=WAIT_SAY_S))
            except OSError as exc:
                raise _unwritable(file, exc) from None
            blob = _read_cached(file, device, say, move_damaged=True)  # trained meanwhile by the holder?
            if blob is None:
                steps = steps_for(cfg, label)
                say(f"oracle {label}: training {file.name} once for this overlay configuration ({steps} "
                    f"steps; it says how long once it has timed a few; oracles=False skips the oracles), "
                    f"cached in {file.parent}")
                blob = train(cfg, label, data, device, steps, say)
                try:
                    rundir.atomic_save(blob, file)
                except OSError as exc:
                    raise _unwritable(file, exc) from None
                say(f"oracle {label}: clean test accuracy {blob['accuracy']:.3f} "
                    f"(chance {1 / blob['num_classes']:.3f})")
                return _oracle(blob, device)
    else:
        say(f"oracle {label}: {file.name}, cached (clean test accuracy {blob['accuracy']:.3f})")
    return _oracle(blob, device)


def _unwritable(file: Path, exc: OSError) -> ConfigError:
    holds = "holds only a damaged copy of" if file.exists() else "does not hold"
    return ConfigError(f"the label-oracle cache {file.parent} cannot be written ({exc.strerror or exc}) and "
                       f"{holds} {file.name}, which this run needs: set data_dir (or FEATDROP_DATA) to a "
                       f"writable folder, or copy the file there from a machine that has it, or run with "
                       f"oracles=False")


def _read_cached(file: Path, device, say, move_damaged: bool = False) -> dict | None:
    """The cached blob at ``file``; None when there is none. A file that cannot be read (cut by a full disk or
    a copy) is None too, after a line naming it; with ``move_damaged`` it is moved aside to ``.damaged`` so it
    is trained again (a folder that cannot be written: the run stops, naming the file and the fix)."""
    if not file.exists():
        return None
    try:
        blob = torch.load(file, map_location=device, weights_only=False)
        blob["state"], blob["accuracy"], blob["num_classes"]
        return blob
    except Exception as exc:  # a cut zip, a pickle error, not a reader
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"
        if not move_damaged:
            say(f"oracle cache {file} is damaged or unreadable ({reason})")
            return None
        aside = file.with_name(file.name + ".damaged")
        try:
            file.replace(aside)
        except OSError as err:
            raise ConfigError(f"the cached label oracle {file} is damaged ({reason}) and cannot be moved "
                              f"aside ({err.strerror or err}): delete or replace it, set data_dir (or "
                              f"FEATDROP_DATA) to a writable folder, or run with oracles=False") from None
        say(f"oracle cache {file} was damaged ({reason}): moved aside to {aside.name}; training it again")
        return None


def _oracle(blob: dict, device) -> Oracle:
    reader = readers.Reader(blob["in_channels"], blob["num_classes"], blob["side"]).to(device)
    reader.load_state_dict(blob["state"])
    return Oracle(blob["label"], reader.eval(), blob["accuracy"], blob["num_classes"], blob["meta"])


# ---------------------------------------------------------------------------- training and test sets
def _image_split(cfg: Config, split: str, device):
    return ImageOverlaySet(cfg.overlay, split, cfg.data_dir, seed=data_seed(cfg), size=cfg.overlay_size,
                           opacity=cfg.overlay_opacity, download=cfg.download, device=device,
                           source=Source.of(cfg)).draw(0)


def test_set(cfg: Config, label: str, data, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean test inputs (encoder inputs) a reader's accuracy is measured on, and their ``label``
    labels: the image test split with the overlay of seed 0, or the run's test clips (``data``)."""
    if records.get(cfg.overlay).modality == "image":
        te = _image_split(cfg, "test", device)
        return normalize(te.images.float() / 255), (te.alt_labels if label == "alt" else te.labels)
    test = data.test
    return data.modality.clean(test.images), (test.alt_labels if label == "alt" else test.labels)


def accuracy(blob: dict, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of ``inputs`` the reader in ``blob`` reads as ``labels``."""
    reader = _oracle(blob, inputs.device).reader
    return (readers.read(reader, inputs) == labels).float().mean().item()


def train(cfg: Config, label: str, data, device, steps: int, say=print) -> dict:
    """Train one reader; returns what the cache stores (weights, accuracy, recipe, time)."""
    record = records.get(cfg.overlay)
    seed = data_seed(cfg)
    g = torch.Generator(device=device).manual_seed(seed * 7_333 + (label == "main"))
    if record.modality == "image":
        tr = _image_split(cfg, "train", device)
        y_tr = tr.alt_labels if label == "alt" else tr.labels
        masks = tr.masks if label == "alt" else None
        near = near_full(cfg, label)

        def batches():
            idx = torch.randint(0, len(y_tr), (BATCH,), generator=g, device=device)
            return readers.image_views(tr.images[idx], g, None if masks is None else masks[idx],
                                       record.copies, near_full=near), y_tr[idx]

        in_channels, side = 3, cfg.image_size
    else:
        tr, m = data.train.draw(0), data.modality
        clean_tr = m.clean(tr.images)
        y_tr = tr.alt_labels if label == "alt" else tr.labels

        def batches():
            idx = torch.randint(0, len(y_tr), (BATCH,), generator=g, device=device)
            return readers.audio_views(clean_tr[idx], g), y_tr[idx]

        in_channels, side = 1, 64
    mains = class_names(Source.of(cfg)) if record.modality == "image" else record.main_names
    k = record.num_alt_classes(cfg.noise_classes) if label == "alt" else len(mains)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 17)
        reader = readers.Reader(in_channels, k, side).to(device)
    t0 = time.perf_counter()
    seconds = readers.fit(reader, batches, steps, say=say)
    test_inputs, y_te = test_set(cfg, label, data, device)
    blob = {"label": label, "state": reader.state_dict(), "num_classes": k, "in_channels": in_channels,
            "side": side, "meta": {"key": key(cfg, label), "steps": steps, "batch": BATCH, "train_s": seconds,
                                   "version": VERSION, "n_test": len(y_te)}}
    blob["accuracy"] = accuracy({**blob, "accuracy": None}, test_inputs, y_te)
    blob["meta"]["total_s"] = time.perf_counter() - t0
    return blob
