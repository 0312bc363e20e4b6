"""Your own images (dataset="imagefolder"): a tiny folder made here (three classes of synthetic pictures at
mixed sizes, some greyscale, a text file and a cut JPEG among them) pretrains, probes, reads its views with
label oracles, runs the suppression report and a grid cell on the CPU; streamed and decoded-once data give
the same run; bad input is named before work."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import ROOT

from featdrop import config, errors, train
from featdrop.data import folder
from featdrop.data.images import ImageOverlaySet, Source
from featdrop.models import build_encoder
from featdrop.probing import suppression

TINY = dict(dataset="imagefolder", image_size=64, overlay="shapes", preset="quick", epochs=1, batch_size=32,
            device="cpu", knn_k=10, progress=False, encoder="convnet")


def make_folder(root, n=30, seed=0, odd=True):
    """Three classes of pictures (stripes across, stripes down, a checkerboard) of random colour and period,
    at 64 × 64, 90 × 70 and 80 × 100 px; every fifth greyscale; PNG and JPEG; a text file and a cut JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, name in enumerate(("across", "down", "checks")):
        (root / name).mkdir(parents=True)
        for i in range(n):
            w, h = [(64, 64), (90, 70), (80, 100)][i % 3]
            yy, xx = np.mgrid[0:h, 0:w]
            period = rng.integers(6, 12)
            pattern = [(yy // period) % 2, (xx // period) % 2, ((yy // period) + (xx // period)) % 2][k]
            img = (pattern[..., None] * rng.integers(40, 255, 3) + rng.normal(0, 20, (h, w, 3)))
            im = Image.fromarray(img.clip(0, 255).astype(np.uint8))
            if i % 5 == 0:
                im = im.convert("L")
            im.save(root / name / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    if odd:
        (root / "across" / "notes.txt").write_text("not an image")
        (root / "down" / "cut.jpg").write_bytes((root / "down" / "000.jpg").read_bytes()[:200])
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("photos"))


def test_the_folder_is_read_with_its_odd_files_named(photos, tmp_path):
    lst = folder.listing(photos, "train")
    assert lst.classes == ("across", "checks", "down") and lst.not_images == ["across/notes.txt"]
    assert len(lst.files) + len(folder.listing(photos, "test").files) == 91  # 90 pictures and the cut JPEG
    with pytest.warns(UserWarning) as seen:
        data = ImageOverlaySet("shapes", "train", str(tmp_path),
                               source=Source("imagefolder", str(photos), 64))
    said = " ".join(str(w.message) for w in seen)
    assert "1 file(s) of the train split are not images" in said and "across/notes.txt" in said
    if "down/cut.jpg" in lst.files:
        assert "1 image file(s) of the train split could not be decoded and are left out: down/cut" in said
    # mixed sizes and greyscale: every picture is RGB at 64 × 64; a greyscale one has R = G = B
    assert data.base.shape[1:] == (3, 64, 64) and data.base.dtype == torch.uint8
    grey = [i for i, f in enumerate(f for f in lst.files if f != "down/cut.jpg") if int(f[-7:-4]) % 5 == 0]
    assert grey and all(torch.equal(data.base[i, 0], data.base[i, 1]) for i in grey)
    # 80 % of each class (across 30, checks 30, down 31 files), less the cut JPEG where it fell in this split
    expected = torch.tensor([24, 24, 25 - ("down/cut.jpg" in lst.files)])
    assert torch.equal(torch.bincount(lst.labels), torch.tensor([24, 24, 25]))
    assert torch.equal(torch.bincount(data.labels), expected)


def test_a_folder_pretrains_probes_and_reads_its_views(photos, tmp_path):
    m = train.pretrain(**TINY, data_path=str(photos), data_dir=str(tmp_path), out_dir=str(tmp_path / "run"),
                       views="viewmaker")
    assert m["chance_main"] == pytest.approx(1 / 3, abs=0.02) and m["probe_main"] > 0.6  # stripes vs checks
    assert "probe_coarse" not in m  # vehicles and animals are CIFAR-10's
    assert 0 <= m["alt_destroyed"] <= 1 and 0 <= m["oracle_accuracy_alt"] <= 1  # the readers read 64 px views
    assert {p.name for p in (tmp_path / "run" / "figures").glob("*.png")} >= {"inputs.png", "views.png"}
    table = suppression.run(f"run:{tmp_path / 'run'}", overlays=["none", "shapes"],
                            out_dir=str(tmp_path / "s"), data_dir=str(tmp_path), maps=False)
    test_files = folder.listing(photos, "test").files
    assert list(table.overlay) == ["none", "shapes"]
    assert table.n_test.iloc[0] == len(test_files) - ("down/cut.jpg" in test_files)  # the run's test images
    assert table.probe_main.notna().all() and table.probe_coarse.isna().all()


def test_streamed_and_decoded_once_are_the_same_run(tmp_path):
    clean = make_folder(tmp_path / "clean", n=20, odd=False)
    once = train.pretrain(**TINY, data_path=str(clean), data_dir=str(tmp_path), out_dir=str(tmp_path / "a"),
                          decode="once", oracles=False)
    streamed = train.pretrain(**TINY, data_path=str(clean), data_dir=str(tmp_path), decode="stream",
                              out_dir=str(tmp_path / "b"), oracles=False, loader_workers=2)
    for key in ("probe_main", "probe_alt", "knn_main", "final_loss"):
        assert once[key] == streamed[key], key


def test_a_grid_cell_over_a_folder(photos, tmp_path):
    done = subprocess.run([sys.executable, "-m", "featdrop", "grid", "--runs-dir", str(tmp_path / "g"),
                           "seed=0,1", *[f"{k}={v}" for k, v in {**TINY, "oracles": False}.items()
                                         if k != "progress"],
                           f"data_path={photos}", f"data_dir={tmp_path}"], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    for seed in (0, 1):
        assert json.loads((tmp_path / "g" / f"seed-{seed}" / "metrics.json").read_text())["probe_main"] > 0.5


@pytest.mark.parametrize("fields,error,says", [
    (dict(data_path="/no/such/folder"), errors.DataNotFoundError, "'data_path' = '/no/such/folder': no such"),
    (dict(data_path="ONE"), errors.ConfigError, "holds 1 class sub-folder(s) (across); allowed a folder with "
                                                "at least two"),
    (dict(overlay="digits", image_size=16), errors.ConfigError, "'image_size' = 16 is invalid: allowed a "
                                                                "multiple of 4 from 32 to 1024"),
    (dict(image_size=66), errors.ConfigError, "'image_size' = 66 is invalid: allowed a multiple of 4"),
    (dict(dataset="cifar10"), errors.ConfigError, "'data_path' = "),
    (dict(data_path=None), errors.ConfigError, "'data_path' = None is invalid: allowed the folder of your"),
    (dict(supervise="coarse", loss="supcon"), errors.ConfigError, "'supervise' = 'coarse' is invalid"),
])
def test_bad_input_is_named_before_work(photos, tmp_path, fields, error, says):
    if fields.get("data_path") == "ONE":
        (tmp_path / "one" / "across").mkdir(parents=True)
        fields = {**fields, "data_path": str(tmp_path / "one")}
    fields = {"data_path": str(photos), **fields}
    with pytest.raises(error) as err:
        train.pretrain(**{**TINY, **fields}, data_dir=str(tmp_path), out_dir=str(tmp_path / "run"))
    assert says in str(err.value)
    assert not (tmp_path / "run").exists()


def test_the_encoders_take_the_imagenet_stem_above_64_px():
    x = torch.rand(2, 3, 96, 96)
    for name, dim in (("resnet18", 512), ("resnet50", 2048)):
        small, big = build_encoder(name, image_size=64), build_encoder(name, image_size=96)
        assert small.stem[0].kernel_size == (3, 3) and big.stem[0].kernel_size == (7, 7)
        pooled, prepool = big.features(x)
        assert pooled.shape == (2, dim) and prepool.shape[1] == dim * 9  # 96 px / 32 = a 3 × 3 map
        assert small(torch.rand(2, 3, 64, 64)).shape == (2, 128)


def test_cifar10_at_another_size_is_resized_once(data_dir):
    from conftest import offline_cifar

    if not offline_cifar():
        pytest.skip("no CIFAR-10 copy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = ImageOverlaySet("shapes", "test", data_dir, subset=8, source=Source(image_size=64)).draw(0)
    assert data.images.shape == (8, 3, 64, 64) and data.masks.shape == (8, 64, 64)
    assert 0.09 < data.masks.float().mean() < 0.13  # the shape keeps its share of the image (0.108 at 32 px)
    assert config.resolve(config.make(device="cpu")).image_size == 32


def test_a_streamed_file_that_cannot_be_decoded_is_a_grey_picture_named_once(photos):
    lst = folder.listing(photos, "train") if "down/cut.jpg" in folder.listing(photos, "train").files else \
        folder.listing(photos, "test")
    stream = folder.Streamed(lst, 64, workers=2)
    cut = lst.files.index("down/cut.jpg")
    with pytest.warns(UserWarning, match="cut.jpg could not be decoded .* streamed, it is a mid-grey"):
        batch = stream[torch.tensor([cut, 0])]
    assert (batch[0] == 128).all() and not (batch[1] == 128).all()
    stream.prefetch(torch.tensor([1, 2]))
    assert torch.equal(stream[torch.tensor([1, 2])], folder.Streamed(lst, 64, workers=1)[1:3])  # prefetched
