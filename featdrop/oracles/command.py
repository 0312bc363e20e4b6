"""``featdrop oracles``: list, train and check the label readers (the shipped ones and the user's cache).

    featdrop oracles list                                   # shipped readers, and those in the cache
    featdrop oracles train overlay=digits overlay_opacity=0.5 [--label alt] [--ship]
    featdrop oracles train --all --ship                     # every configuration featdrop ships, missing ones
    featdrop oracles check                                  # each shipped reader against its recorded figure

``train`` trains the readers of one configuration (the config's fields, as ``featdrop train`` takes them) into
the user's cache, or with ``--ship`` into the package, in half precision, with a manifest entry. Training is
deterministic for a given number of threads, CPU capability and library versions, so the same command on the
same kind of machine writes the same weights.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from .. import config as cfgmod
from .. import device as devmod
from .. import fields, rundir
from ..data import records
from ..errors import ConfigError, DataNotFoundError
from ..views import modality
from . import shipped, store


def _data(cfg, device):
    """The run's data, which audio readers train on (image readers build their own composites)."""
    if records.get(cfg.overlay).modality == "audio":
        return modality.load(dataclasses.replace(cfg, batch_size=1), device)
    return None


# the config fields a reader's training data depends on (store.key names them): images, and audio besides
IMAGE_FIELDS = ("overlay", "overlay_opacity", "overlay_size")
AUDIO_FIELDS = ("seed", "noise_volume", "noise_classes", "noise_draw", "audio_dataset", "subset")


def reader_fields(cfg) -> dict:
    """The fields of ``cfg`` that decide a reader's training data."""
    audio = records.get(cfg.overlay).modality == "audio"
    return {f: getattr(cfg, f) for f in IMAGE_FIELDS + (AUDIO_FIELDS if audio else ())}


def command(cfg, label: str, ship: bool) -> str:
    """The command line that trains this reader again (what the manifest records)."""
    shown = [f"{f}={v}" for f, v in reader_fields(cfg).items()
             if f == "overlay" or v != getattr(cfgmod.Config, f)]
    return " ".join(["featdrop oracles train", *shown, f"--label {label}"] + (["--ship"] if ship else []))


def train_one(cfg, label: str, ship: bool, device, data=None, say=print) -> dict:
    """Train ``label``'s reader of ``cfg``; write it to the cache, or (``ship``) into the package in half
    precision with its manifest entry. Returns the blob as written (accuracy of the weights as stored)."""
    steps = store.steps_for(cfg, label)
    say(f"training {store.key(cfg, label)} ({steps} steps, {torch.get_num_threads()} threads)")
    t0 = time.perf_counter()
    blob = store.train(cfg, label, data, device, steps, say)
    if not ship:
        rundir.atomic_save(blob, store.path(cfg, label))
        say(f"  clean test accuracy {blob['accuracy']:.4f}; wrote {store.path(cfg, label)}")
        return blob
    blob = shipped.as_float(shipped.half(blob))  # measure the weights that ship
    inputs, labels = store.test_set(cfg, label, data, device)
    blob["accuracy"] = store.accuracy(blob, inputs, labels)
    idx = shipped.check_indices(len(labels)).to(labels.device)
    entry = {"key": store.key(cfg, label), "label": label, "fields": reader_fields(cfg),
             "recipe": store.recipe(cfg, label), "accuracy": blob["accuracy"], "n_test": len(labels),
             "accuracy_check": store.accuracy(blob, inputs[idx], labels[idx]), "n_check": len(idx),
             "command": command(cfg, label, ship=True), "train_s": round(time.perf_counter() - t0, 1),
             "trained_with": {"threads": torch.get_num_threads(),
                              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                              "torch": torch.__version__, "device": devmod.describe(device)}}
    path = shipped.write(blob, entry)
    say(f"  clean test accuracy {entry['accuracy']:.4f} (check items {entry['accuracy_check']:.4f}); "
        f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return blob


def shipped_configs(base: dict) -> list:
    """The resolved configs of every configuration featdrop ships (shipped.CONFIGS)."""
    return [cfgmod.resolve(cfgmod.make(**{**base, "overlay": o, "overlay_opacity": a}))
            for o, a in shipped.CONFIGS]


def check(say=print, device="cpu") -> list[dict]:
    """Each shipped reader's accuracy on its check items now, against the figure its manifest records."""
    rows = []
    for key, entry in shipped.manifest().items():
        cfg = cfgmod.resolve(cfgmod.make(**entry["fields"], device=device))
        dev = torch.device(device)
        try:
            data = _data(cfg, dev)
        except DataNotFoundError as e:  # an audio reader without the spoken digits on disk
            say(f"{key}: not checked, its data are not here ({e})")
            continue
        inputs, labels = store.test_set(cfg, entry["label"], data, dev)
        idx = shipped.check_indices(len(labels)).to(labels.device)
        blob = shipped.load(shipped.FOLDER / entry["file"], dev)
        now = store.accuracy(blob, inputs[idx], labels[idx])
        rows.append({"key": key, "recorded": entry["accuracy_check"], "now": now})
        say(f"{key}: {now:.4f} on {len(idx)} check items (recorded {entry['accuracy_check']:.4f})")
    return rows


EXAMPLES = """examples:
  featdrop oracles list
  featdrop oracles train overlay=digits overlay_opacity=0.5 --label alt
  featdrop oracles train --all --ship        # the configurations featdrop ships that are missing
  featdrop oracles check"""


def main(argv=None, prog: str = "featdrop oracles") -> int:
    ap = argparse.ArgumentParser(prog=prog, description="List, train and check the label oracles (readers) "
                                 "that measure label destruction.", epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("list", "train", "check"))
    ap.add_argument("fields", nargs="*", metavar="FIELD=VALUE", help="config fields of the configuration "
                    "(train): overlay, overlay_opacity, overlay_size, seed, noise_volume, data_dir, device")
    ap.add_argument("--label", choices=("alt", "main"), help="train only this label's reader (default: both, "
                    "or main alone where the overlay shows nothing)")
    ap.add_argument("--ship", action="store_true", help="write into the package (half precision, manifest "
                    "entry) instead of the user's cache")
    ap.add_argument("--all", action="store_true", help="train: every configuration featdrop ships whose "
                    "reader is missing or was trained with another recipe")
    args = ap.parse_intermixed_args(argv)
    _, params = fields.parse_assignments(args.fields, sweep=False)
    params.setdefault("device", "cpu")
    base = cfgmod.resolve(cfgmod.make(**params))
    if args.action == "list":
        for key, e in shipped.manifest().items():
            print(f"shipped  {key}: accuracy {e['accuracy']:.4f} ({e['bytes'] / 1e6:.2f} MB)")
        cache = store.path(base, "main").parent
        for f in sorted(cache.glob("*.pt")) if cache.is_dir() else []:
            print(f"cached   {f.stem} ({cache})")
        return 0
    if args.action == "check":
        check(device=base.device)
        return 0
    device = devmod.resolve(base.device)
    if args.all:
        if not args.ship:
            raise ConfigError("--all trains the configurations featdrop ships: give --ship too")
        todo = [(cfg, label) for cfg in shipped_configs(params) for label in store.labels_to_read(cfg)
                if shipped.find(store.key(cfg, label), store.recipe(cfg, label)) is None]
        print(f"{len(todo)} reader(s) to train: {', '.join(store.key(c, lb) for c, lb in todo)}", flush=True)
    else:
        todo = [(base, label) for label in store.labels_to_read(base) if args.label in (None, label)]
        if not todo:
            raise ConfigError(f"--label {args.label}: overlay={base.overlay} at opacity "
                              f"{base.overlay_opacity:g} shows nothing to read; it has a main reader only")
    for cfg, label in todo:
        train_one(cfg, label, args.ship, device, _data(cfg, device), say=lambda s: print(s, flush=True))
    return 0
