"""Loaders on tiny files written here, the offline copy when present, the cache, the clear errors."""
import gzip
import struct
import urllib.error
import warnings

import numpy as np
import pytest
import torch
from conftest import needs_cifar
from PIL import Image

from featdrop.data import cifar as data
from featdrop.data import images as datasets
from featdrop.errors import DataNotFoundError


def write_image_folder(root, split, per_class=3, classes=("cat", "dog")):
    rng = np.random.default_rng(0)
    expect = []
    for c in classes:
        d = root / "cifar10" / split / c
        d.mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(a).save(d / f"{i:04d}.png")
            expect.append((a, classes.index(c)))
    return expect


def write_idx(path, arr, compress):
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    blob = header + arr.astype(np.uint8).tobytes()
    # closed before it is read: since Python 3.12 an unclosed gzip writer keeps its data in a buffer
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(blob)


def test_image_folder_loader_and_cache_hit(tmp_path, monkeypatch):
    expect = write_image_folder(tmp_path, "train")
    x, y = data.load_cifar10(tmp_path, "train", download=False)
    assert x.dtype == torch.uint8 and x.shape == (6, 3, 32, 32)
    for i, (a, label) in enumerate(expect):  # lossless PNGs decode exactly
        assert np.array_equal(x[i].permute(1, 2, 0).numpy(), a) and y[i] == label
    assert (tmp_path / "featdrop_cache" / "cifar10_train.pt").exists()
    monkeypatch.setattr(data, "_decode_cifar10", lambda *a: pytest.fail("decoded again despite the cache"))
    x2, y2 = data.load_cifar10(tmp_path, "train", download=False)
    assert torch.equal(x, x2) and torch.equal(y, y2)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_loader_both_splits(tmp_path, compress):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    sets = {}
    for split, (img, lab) in data._MNIST_FILES.items():
        imgs, labs = rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, 7)
        sfx = ".gz" if compress else ""
        write_idx(raw / (img + sfx), imgs, compress)
        write_idx(raw / (lab + sfx), labs, compress)
        sets[split] = (imgs, labs)
    for split in ("train", "test"):
        d, l = data.load_mnist(tmp_path, split, download=False)
        assert np.array_equal(d.numpy(), sets[split][0]) and np.array_equal(l.numpy(), sets[split][1])


def test_mnist_only_test_split_gives_disjoint_pools_and_warns(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = np.arange(40 * 28 * 28).reshape(40, 28, 28) % 251  # each digit image distinct
    imgs[:, 0, 0] = np.arange(40)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", imgs, True)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(40) % 10, True)
    monkeypatch.setattr(data, "_warned_mnist_split", False)
    with pytest.warns(UserWarning, match="disjoint"):
        tr, _ = data.load_mnist(tmp_path, "train", download=False)
    te, _ = data.load_mnist(tmp_path, "test", download=False)
    ids_tr, ids_te = set(tr[:, 0, 0].tolist()), set(te[:, 0, 0].tolist())
    assert len(ids_tr) == 20 and len(ids_te) == 20 and not ids_tr & ids_te
    tr2, _ = data.load_mnist(tmp_path, "train", download=False)
    assert torch.equal(tr, tr2)


def damage(path, how):
    blob = path.read_bytes()
    path.write_bytes({"truncated": blob[:len(blob) // 2], "empty": b"",
                      "not torch": b"not a torch file\n" * 8}[how])


@pytest.mark.parametrize("how", ["truncated", "empty", "not torch"])
def test_damaged_image_cache_is_rebuilt_with_a_warning_naming_it(tmp_path, monkeypatch, how):
    write_image_folder(tmp_path, "train")
    x, y = data.load_cifar10(tmp_path, "train", download=False)
    cache = tmp_path / "featdrop_cache" / "cifar10_train.pt"
    damage(cache, how)
    with pytest.warns(UserWarning, match="rebuilding") as record:
        x2, y2 = data.load_cifar10(tmp_path, "train", download=False)
    assert str(cache) in str(record[0].message)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # the rebuilt cache is whole again: a third load reads it, silently, without decoding
    monkeypatch.setattr(data, "_decode_cifar10",
                        lambda *a: pytest.fail("decoded again despite the rebuilt cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x3, _ = data.load_cifar10(tmp_path, "train", download=False)
    assert torch.equal(x, x3)


def test_damaged_audio_cache_is_rebuilt_with_a_warning_naming_it(tmp_path, monkeypatch):
    from scipy.io import wavfile

    from featdrop.data import audio

    rec = tmp_path / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    t = np.arange(2400) / 8000
    for digit, speaker in ((1, "alice"), (2, "theo")):
        wavfile.write(rec / f"{digit}_{speaker}_0.wav", 8000,
                      (8000 * np.sin(2 * np.pi * 300 * digit * t)).astype(np.int16))
    clips = audio.load_clips(tmp_path, "fsdd")
    cache = next((tmp_path / "featdrop_cache").glob("fsdd_*.pt"))
    damage(cache, "truncated")
    with pytest.warns(UserWarning, match="rebuilding") as record:
        again = audio.load_clips(tmp_path, "fsdd")
    assert str(cache) in str(record[0].message)
    assert (torch.equal(again["head"], clips["head"])
            and again["speakers"] == clips["speakers"] == ["alice", "theo"])
    monkeypatch.setattr(audio, "decode_folder",
                        lambda f: pytest.fail("decoded again despite the rebuilt cache"))
    assert torch.equal(audio.load_clips(tmp_path, "fsdd")["head"], clips["head"])


def test_missing_data_gives_clear_message_without_download(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        data.load_cifar10(tmp_path, "test", download=False)
    msg = str(err.value)
    assert str(tmp_path / "cifar10" / "test") in msg and "FEATDROP_DATA" in msg and "download" in msg


def test_failed_download_is_not_a_raw_urllib_traceback(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(DataNotFoundError, match="download failed: URLError"):
        data.load_cifar10(tmp_path, "train", download=True)
    with pytest.raises(DataNotFoundError, match="MNIST"):
        data.load_mnist(tmp_path, "train", download=True)


def test_data_dir_defaults_to_env(monkeypatch):
    from featdrop import config

    monkeypatch.setenv("FEATDROP_DATA", "/somewhere/else")
    assert config.default_data_dir() == "/somewhere/else"
    monkeypatch.delenv("FEATDROP_DATA")
    assert config.default_data_dir() == "data"


@needs_cifar
def test_offline_cifar10_copy(data_dir):
    x, y = data.load_cifar10(data_dir, "train")
    xt, yt = data.load_cifar10(data_dir, "test")
    assert x.shape == (50000, 3, 32, 32) and xt.shape == (10000, 3, 32, 32)
    assert torch.bincount(y).tolist() == [5000] * 10 and torch.bincount(yt).tolist() == [1000] * 10
    # real photos: per-channel means match CIFAR-10's published (0.491, 0.482, 0.446)
    # (JPEG shifts them slightly)
    means = x.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(means, torch.tensor([0.491, 0.482, 0.446]), atol=0.01), means


@needs_cifar
def test_overlay_set_test_split_fixed_train_redraws(data_dir):
    test = datasets.ImageOverlaySet("shapes", "test", data_dir, seed=3, subset=500)
    a, b = test.draw(), test.draw()
    assert torch.equal(a.images, b.images) and torch.equal(a.alt_labels, b.alt_labels)
    train = datasets.ImageOverlaySet("shapes", "train", data_dir, seed=3, subset=500)
    e0, e1 = train.draw(0), train.draw(1)
    assert not torch.equal(e0.alt_labels, e1.alt_labels)
    assert torch.equal(e0.labels, e1.labels)  # the photos stay, the overlays move
    other_seed = datasets.ImageOverlaySet("shapes", "test", data_dir, seed=4, subset=500).draw()
    assert not torch.equal(a.images, other_seed.images)
