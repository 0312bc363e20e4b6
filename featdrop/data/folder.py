"""A user's own images: a folder of class sub-folders (torchvision's ImageFolder layout), at any image size.

    <data_path>/<class>/<image>                         split here: a seeded TEST_SHARE of each class is the test
    <data_path>/{train,val}/<class>/<image>             (or test/ for val/): the splits as given, e.g. ImageNet

Classes are the sorted sub-folder names (torchvision's rule); images are found in each class folder and its
sub-folders by extension (torchvision's list). Files of other extensions are skipped and counted. An image file
that cannot be decoded is left out and named with ``decode="once"``; streamed, where the items are numbered
before anything is decoded, it becomes a mid-grey picture, named once in a warning. Every image is converted to RGB (greyscale, palette and RGBA alike), its shorter side resized to
``side`` and centre-cropped to ``side`` × ``side``: the uint8 picture the overlays, the views and the encoder
see, as CIFAR-10's 32 × 32 (a deviation from MoCo, whose crops are taken from the full-resolution image).

Two ways to hold a split (``decode``): ``once`` decodes every image once, by DataLoader workers, into a uint8
tensor cached on disk (``<data_dir>/featdrop_cache/``, keyed by the files' names, sizes and times); ``stream``
decodes each batch when it is needed, by a pool of threads (Pillow's decoder and resize release the GIL), the
next batch while the current one trains. ``auto`` decodes once when the training split fits in a quarter of
the memory.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataNotFoundError
from ..rundir import atomic_save
from .base import read_cache

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
TEST_SHARE = 0.2
CACHE_VERSION = 1
MEMORY_SHARE = 0.25  # decode="auto" decodes once when the training split takes at most this share of the RAM


@dataclass
class Listing:
    """The image files of one split: paths relative to ``root``, their class labels and the class names."""
    root: Path
    files: list[str]
    labels: torch.Tensor
    classes: tuple[str, ...]
    not_images: list[str] = field(default_factory=list)  # skipped for their extension

    def digest(self) -> str:
        """What the decoded split depends on: the files' names, sizes and modification times."""
        h = hashlib.sha1(str(self.root.resolve()).encode())
        for f in self.files:
            st = (self.root / f).stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:12]


def _presplit(root: Path, split: str) -> Path | None:
    """root/train, or root/val (root/test) for the test split, when the folder is split already."""
    if not (root / "train").is_dir():
        return None
    names = ("train",) if split == "train" else ("val", "test")
    return next((root / n for n in names if (root / n).is_dir()), None)


def presplit(root: Path) -> bool:
    """The folder holds train/ and val/ (or test/): the splits as given."""
    return _presplit(root, "train") is not None and _presplit(root, "test") is not None


def class_folders(base: Path, data_path) -> list[Path]:
    classes = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ConfigError(f"config field 'data_path' = {str(data_path)!r} is invalid: {base} holds "
                          f"{len(classes)} class sub-folder(s) ({', '.join(p.name for p in classes) or 'none'}); "
                          f"allowed a folder with at least two, one per class: <data_path>/<class>/<image> "
                          f"(torchvision's ImageFolder layout), or <data_path>/train/<class>/... with val/")
    return classes


def listing(data_path: str | os.PathLike, split: str) -> Listing:
    """The files of ``split`` (train | test) under ``data_path``; a ConfigError or DataNotFoundError naming
    the folder when it cannot hold a data set."""
    root = Path(data_path)
    if not root.is_dir():
        raise DataNotFoundError(f"config field 'data_path' = {str(data_path)!r}: no such folder; allowed a "
                                f"folder of class sub-folders (<data_path>/<class>/<image>)")
    given = _presplit(root, split)
    base = given or root
    if _presplit(root, "test") is None and (root / "train").is_dir():
        raise ConfigError(f"config field 'data_path' = {str(data_path)!r} is invalid: it has train/ but no val/ "
                          f"or test/ beside it; allowed both, or class sub-folders directly under it")
    classes = class_folders(base, data_path)
    files, labels, skipped = [], [], []
    for k, folder in enumerate(classes):
        found = sorted(p for p in folder.rglob("*") if p.is_file())
        images = [p for p in found if p.suffix.lower() in IMG_EXTENSIONS]
        skipped += [str(p.relative_to(root)) for p in found if p.suffix.lower() not in IMG_EXTENSIONS]
        if given is None:  # split here: a seeded share of each class is the test split
            perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(12345 + k)).tolist()
            n_test = max(1, round(TEST_SHARE * len(images))) if len(images) >= 2 else 0
            keep = perm[:n_test] if split == "test" else perm[n_test:]
            images = [images[i] for i in sorted(keep)]
        files += [str(p.relative_to(root)) for p in images]
        labels += [k] * len(images)
    if not files:
        raise DataNotFoundError(f"config field 'data_path' = {str(data_path)!r}: no image files ("
                                f"{', '.join(IMG_EXTENSIONS)}) in the {split} split of its class folders"
                                + (f"; {len(skipped)} other file(s) skipped" if skipped else ""))
    return Listing(root, files, torch.tensor(labels, dtype=torch.int64), tuple(p.name for p in classes),
                   skipped)


def decode(path: Path, side: int) -> np.ndarray:
    """One image file → uint8 (side, side, 3): RGB, the shorter side resized to ``side`` (antialiased), then
    the centre crop. Raises for a file Pillow cannot decode."""
    from PIL import Image

    with Image.open(path) as im:
        im.draft("RGB", (side, side))  # JPEG: decode at a reduced scale when the image is much larger
        im = im.convert("RGB")
        w, h = im.size
        scale = side / min(w, h)
        nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
        left, top = (nw - side) // 2, (nh - side) // 2
        return np.array(im.crop((left, top, left + side, top + side)), dtype=np.uint8)


class _Decoded(torch.utils.data.Dataset):
    def __init__(self, root: Path, files: list[str], side: int):
        self.root, self.files, self.side = root, files, side

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        try:
            return i, torch.from_numpy(decode(self.root / self.files[i], self.side)).permute(2, 0, 1)
        except Exception:  # unreadable: the caller skips and names it
            return i, torch.zeros(0, dtype=torch.uint8)


def workers_default() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode_all(lst: Listing, side: int, workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Every image of the listing, decoded by DataLoader workers: (uint8 (N, 3, S, S), labels, the files that
    could not be decoded, which are left out)."""
    workers = workers_default() if workers is None else workers
    loader = torch.utils.data.DataLoader(_Decoded(lst.root, lst.files, side), batch_size=None,
                                         num_workers=workers if len(lst.files) > 64 else 0)
    images = torch.empty(len(lst.files), 3, side, side, dtype=torch.uint8)
    ok = torch.zeros(len(lst.files), dtype=torch.bool)
    for i, x in loader:
        if x.numel():
            images[i], ok[i] = x, True
    bad = [f for f, good in zip(lst.files, ok.tolist()) if not good]
    return images[ok], lst.labels[ok], bad


def load_once(lst: Listing, split: str, side: int, cache_dir: Path, workers: int | None = None):
    """The split decoded once (``decode_all``) and cached; (images, labels, unreadable files)."""
    cache = cache_dir / f"folder-{lst.root.name}-{split}-{lst.digest()}-{side}px.pt"
    blob = read_cache(cache)
    if blob is None or blob.get("version") != CACHE_VERSION:
        images, labels, bad = decode_all(lst, side, workers)
        blob = {"version": CACHE_VERSION, "images": images, "labels": labels, "bad": bad}
        atomic_save(blob, cache)
    if blob["bad"]:
        warnings.warn(f"{lst.root}: {len(blob['bad'])} image file(s) of the {split} split could not be decoded "
                      f"and are left out: {', '.join(blob['bad'][:3])}" + (" ..." if len(blob["bad"]) > 3 else ""),
                      stacklevel=3)
    if not len(blob["labels"]):
        raise DataNotFoundError(f"{lst.root}: none of the {len(lst.files)} image files of the {split} split "
                                f"could be decoded")
    return blob["images"], blob["labels"], blob["bad"]


class Streamed:
    """The uint8 images (N, 3, S, S) of a listing, decoded when indexed (an int, a slice or an index tensor)
    by a pool of threads; ``prefetch(idx)`` starts decoding a batch that ``[idx]`` then returns."""

    def __init__(self, lst: Listing, side: int, workers: int | None = None, rows: torch.Tensor | None = None):
        self.lst, self.side = lst, side
        self.rows = torch.arange(len(lst.files)) if rows is None else rows  # this view's files, by listing row
        self.workers = workers_default() if workers is None else workers
        self._pool: ThreadPoolExecutor | None = None
        self._ahead_thread: ThreadPoolExecutor | None = None
        self._ahead: dict[tuple, object] = {}
        self.device = torch.device("cpu")
        self.bad: set = set()  # files that could not be decoded (grey pictures)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple:
        return (len(self), 3, self.side, self.side)

    def subset(self, idx: torch.Tensor) -> "Streamed":
        return Streamed(self.lst, self.side, self.workers, self.rows[idx])

    def _indices(self, key) -> list[int]:
        if isinstance(key, slice):
            return self.rows[key].tolist()
        if isinstance(key, int):
            return [int(self.rows[key])]
        return self.rows[torch.as_tensor(key).cpu()].tolist()

    def _one(self, path: Path) -> np.ndarray:
        try:
            return decode(path, self.side)
        except Exception as exc:  # numbered already: a grey picture in its place, named once
            if path not in self.bad:
                self.bad.add(path)
                warnings.warn(f"{path} could not be decoded ({type(exc).__name__}: {exc}); streamed, it is a "
                              f"mid-grey picture with its label (decode=once leaves such files out)", stacklevel=2)
            return np.full((self.side, self.side, 3), 128, dtype=np.uint8)

    def _decode(self, rows: list[int]) -> torch.Tensor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers)
        arrays = list(self._pool.map(self._one, [self.lst.root / self.lst.files[r] for r in rows]))
        if not arrays:
            return torch.zeros(0, 3, self.side, self.side, dtype=torch.uint8)
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def prefetch(self, key) -> None:
        """Start decoding batch ``key`` in the background (one thread that hands the files to the pool: a
        task of the pool itself waiting for the pool would deadlock it)."""
        rows = self._indices(key)
        if self._ahead_thread is None:
            self._ahead_thread = ThreadPoolExecutor(1)
        self._ahead[tuple(rows)] = self._ahead_thread.submit(self._decode, rows)

    def __getitem__(self, key) -> torch.Tensor:
        rows = self._indices(key)
        ahead = self._ahead.pop(tuple(rows), None)
        return ahead.result() if ahead is not None else self._decode(rows)

    def __del__(self):
        for pool in (self._ahead_thread, self._pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


def fits_in_memory(n: int, side: int) -> bool:
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return True
    return n * 3 * side * side <= MEMORY_SHARE * ram
