"""Label readers that ship inside the package, so that a first run of a common configuration trains none.

A shipped reader is the file ``featdrop/oracles/shipped/<key>.pt`` (the same key as the user's cache, see
``store.key``) with its weights in half precision (about 0.3 MB each), and an entry in ``manifest.json``
beside it: the key, the recipe it was trained with (``store.recipe``), its clean test accuracy (on the whole
test split, and on the fixed 1,000 items the tests check), where and how long it trained, and the command
that writes it again. A run uses a shipped reader only when both the key and the recipe match the code's
(``find``), so a changed recipe or step count never loads a stale one.

The configurations shipped are those the presets, docs and notebooks use (``CONFIGS``); ``featdrop oracles
train --all --ship`` trains the missing ones into the package (resumable: each is written when it is done).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .. import rundir

FOLDER = Path(__file__).resolve().parent / "shipped"
MANIFEST = FOLDER / "manifest.json"
CHECK_ITEMS = 1000  # the test items a shipped reader's recorded check accuracy is measured on (check_indices)

# (overlay, overlay_opacity) of the readers shipped: alt and main of each, and the plain photos' class reader
# (any overlay at opacity 0, or overlay none). Size 1 (the reference geometry) throughout. Audio readers
# depend on the run's seed and noise settings: those of the quick preset's default run (seed 0, volume 0.05).
CONFIGS = ((("none", 1.0),) + tuple((o, a) for o in ("shapes", "digits", "letters") for a in (1.0, 0.5))
           + (("noise", 1.0),))


def manifest() -> dict:
    """{key: entry} of the shipped readers ({} when none are shipped)."""
    try:
        return json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        return {}


def find(key: str, recipe: dict) -> Path | None:
    """The shipped file of ``key`` when it exists and was trained with ``recipe``; else None."""
    entry = manifest().get(key)
    if entry is None or entry.get("recipe") != recipe or not (FOLDER / entry["file"]).exists():
        return None
    return FOLDER / entry["file"]


def load(path: Path, device) -> dict:
    """A shipped reader's blob, its weights back in float32 (as ``store`` loads a cached one)."""
    return as_float(torch.load(path, map_location=device, weights_only=False))


def as_float(blob: dict) -> dict:
    """The blob with its floating-point weights in float32 (how every reader runs)."""
    return {**blob, "state": {k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()}}


def half(blob: dict) -> dict:
    """The blob with its floating-point weights in half precision (what ships)."""
    return {**blob, "state": {k: v.half() if v.is_floating_point() else v for k, v in blob["state"].items()}}


def check_indices(n: int) -> torch.Tensor:
    """The fixed test items (of n) a shipped reader's check accuracy is measured on: a seeded permutation's
    first CHECK_ITEMS (the test split is in class order)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(2027))[:CHECK_ITEMS]


def write(blob: dict, entry: dict) -> Path:
    """Write a reader into the package (half precision) and its manifest entry; returns the file."""
    key = blob["meta"]["key"]
    path = FOLDER / f"{key}.pt"
    rundir.atomic_save(half(blob), path)
    entry = {**entry, "file": path.name, "bytes": path.stat().st_size,
             "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    rundir.write_json(MANIFEST, {**manifest(), key: entry})
    return path
