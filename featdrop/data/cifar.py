"""Image data: CIFAR-10 and MNIST decoded once into uint8 tensors and cached.

Sources, in order: an ImageFolder tree ``<data_dir>/cifar10/{train,test}/<class>/*`` (the offline
copy unpacks to exactly this), then torchvision's official files under ``<data_dir>``
(downloaded when ``download=True``). MNIST comes from torchvision's ``<data_dir>/MNIST/raw`` idx
files (plain or ``.gz``). The decoded split is cached as ``<data_dir>/featdrop_cache/*.pt`` so a
second load is one ``torch.load``; a damaged cache file is rebuilt from the sources, with a warning.
"""
from __future__ import annotations

import gzip
import os
import struct
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..errors import DataNotFoundError
from .base import cached

SPLITS = ("train", "test")


def _not_found(what: str, looked: list[Path], data_dir: Path, reason: str) -> DataNotFoundError:
    places = "\n".join(f"  - {p}" for p in looked)
    return DataNotFoundError(
        f"{what} not found ({reason}). Looked in:\n{places}\n"
        f"To fix: either let torchvision download it (needs network; pass download=True, the default), "
        f"or unpack an offline copy into {data_dir} (for CIFAR-10 the ImageFolder layout "
        f"cifar10/{{train,test}}/<class>/*.jpg; "
        f"for MNIST the files MNIST/raw/t10k-images-idx3-ubyte[.gz] etc.), "
        f"or point data_dir / the FEATDROP_DATA environment variable at a folder that holds it."
    )


# ---------------------------------------------------------------------------------------- CIFAR-10
def load_cifar10(data_dir: str | os.PathLike, split: str,
                 download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images uint8 (N, 3, 32, 32), labels int64 (N,))`` for ``split`` in train | test."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is invalid: allowed train, test")
    data_dir = Path(data_dir)
    return cached(data_dir / "featdrop_cache" / f"cifar10_{split}.pt",
                   lambda: _decode_cifar10(data_dir, split, download))


def _decode_cifar10(data_dir: Path, split: str, download: bool):
    folder = data_dir / "cifar10" / split
    if folder.is_dir():
        return _decode_image_folder(folder)
    pickles = data_dir / "cifar-10-batches-py"
    if not pickles.is_dir() and not download:
        raise _not_found("CIFAR-10", [folder, pickles], data_dir, "download=False")
    import torchvision

    try:
        with _tidy(data_dir):
            ds = torchvision.datasets.CIFAR10(str(data_dir), train=split == "train", download=download)
    except Exception as exc:  # urllib errors, checksum errors, missing files
        raise _not_found("CIFAR-10", [folder, pickles], data_dir,
                         f"download failed: {type(exc).__name__}: {exc}") from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    return images, torch.tensor(ds.targets, dtype=torch.int64)


@contextmanager
def _tidy(data_dir: Path):
    """A failed download leaves no empty folders behind: when ``data_dir`` did not exist before, the empty
    folders torchvision made in it (and it) are removed again."""
    existed = data_dir.exists()
    try:
        yield
    except BaseException:
        if not existed and data_dir.is_dir():
            for folder in sorted((p for p in data_dir.rglob("*") if p.is_dir()), reverse=True):
                if not any(folder.iterdir()):
                    folder.rmdir()
            if not any(data_dir.iterdir()):
                data_dir.rmdir()
        raise


def _decode_image_folder(folder: Path):
    """Decode an ImageFolder tree; classes are the sorted sub-folder names (torchvision's rule)."""
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((folder / name).iterdir()):
            with Image.open(file) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    if not images:
        raise DataNotFoundError(f"no images under {folder}")
    arr = np.stack(images).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(arr)), torch.tensor(labels, dtype=torch.int64)


# ------------------------------------------------------------------------------------------- MNIST
_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_warned_mnist_split = False


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (MNIST's format), plain or gzip-compressed."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not a uint8 idx file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_raw(raw: Path, stem: str) -> Path | None:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _mnist_split(raw: Path, split: str):
    paths = [_find_raw(raw, stem) for stem in _MNIST_FILES[split]]
    if None in paths:
        return None
    return torch.from_numpy(read_idx(paths[0]).copy()), torch.from_numpy(read_idx(paths[1]).astype(np.int64))


def load_mnist(data_dir: str | os.PathLike, split: str,
               download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits ``uint8 (N, 28, 28)`` and labels for the pool used by CIFAR ``split``.

    With both official splits present, train overlays draw from MNIST-train and test overlays from
    MNIST-test (the reference drew both from MNIST-train). With only the 10k test file present (the
    offline copy), its digits are split by a fixed permutation into disjoint halves, with a warning.
    """
    global _warned_mnist_split
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is invalid: allowed train, test")
    data_dir = Path(data_dir)
    raw = data_dir / "MNIST" / "raw"
    have = {s: _mnist_split(raw, s) for s in SPLITS}
    if have["train"] is None and download:
        import torchvision

        try:
            with _tidy(data_dir):
                torchvision.datasets.MNIST(str(data_dir), train=True, download=True)
                torchvision.datasets.MNIST(str(data_dir), train=False, download=True)
            have = {s: _mnist_split(raw, s) for s in SPLITS}
        except Exception as exc:
            if have["test"] is None:
                raise _not_found("MNIST", [raw], data_dir,
                                 f"download failed: {type(exc).__name__}: {exc}") from None
    if have["train"] is not None and have["test"] is not None:
        return have[split]
    only = have["train"] if have["train"] is not None else have["test"]
    if only is None:
        raise _not_found("MNIST", [raw], data_dir, "download=False" if not download else "no idx files")
    if not _warned_mnist_split:
        warnings.warn(f"MNIST: only one split found under {raw}; splitting its {len(only[0])} digits "
                      f"into disjoint train/test pools by a fixed permutation", stacklevel=2)
        _warned_mnist_split = True
    images, labels = only
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    half = len(images) // 2
    idx = perm[:half] if split == "train" else perm[half:]
    return images[idx], labels[idx]
