"""Label oracles: a reader trained on label-preserving views reads the overlay's label from a composite image;
a view that replaces the overlay is counted as destroyed and an identity view never is; oracles are trained
once per overlay configuration and cached; a run records alt_destroyed / main_destroyed every epoch."""
import json

import pytest
import torch
from conftest import needs_cifar

from featdrop import config, train
from featdrop.data import overlays
from featdrop.data.images import ImageOverlaySet
from featdrop.oracles import command, reader, shipped, store
from featdrop.train.monitor import label_destruction
from featdrop.views.expert import normalize


class Fixed:
    """An oracle stand-in that reads a fixed answer per input row (the row's first value)."""

    def read(self, x):
        return x[:, 0].long()


def test_destruction_counts_only_items_the_oracle_reads_right_when_clean():
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    clean = torch.tensor([[0], [1], [2], [1], [1], [0]])   # items 3 and 5 misread when clean: not counted
    view = torch.tensor([[0], [2], [2], [0], [0], [2]])    # of the 4 read right, items 1 and 4 now wrong
    out = label_destruction({"alt": Fixed()}, clean, view, {"alt": y})
    assert out == {"alt_destroyed": 0.5}
    assert label_destruction({"alt": Fixed()}, clean, clean, {"alt": y}) == {"alt_destroyed": 0.0}


def test_keeping_crops_contain_their_box():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(500, 32, 32, dtype=torch.bool)
    for i in range(500):  # a random rectangle per image, the overlay's pixels
        x0, y0 = torch.randint(0, 24, (2,), generator=g).tolist()
        masks[i, y0:y0 + 1 + i % 8, x0:x0 + 1 + (i // 8) % 8] = True
    boxes = reader.keep_boxes(masks, 1, g)
    x0, y0, w, h = reader.keeping_crops(boxes, 32, g)
    eps = 1e-5
    assert (x0 >= -eps).all() and (y0 >= -eps).all()
    assert (x0 + w <= 1 + eps).all() and (y0 + h <= 1 + eps).all()
    assert (x0 * 32 <= boxes[:, 0] + eps).all() and ((x0 + w) * 32 >= boxes[:, 1] - eps).all()
    assert (y0 * 32 <= boxes[:, 2] + eps).all() and ((y0 + h) * 32 >= boxes[:, 3] - eps).all()
    assert w.min() >= 0.45 - eps and w.std() > 0.1  # crops of many sizes, never below the smallest side
    # with near_full, that share of the crops is at least 0.85 of the side, on both axes, and still keeps
    # the box: about half here, against about 0.15 / 0.55 of the plain draw's widths
    x0, y0, w, h = reader.keeping_crops(boxes, 32, g, near_full=0.5)
    assert (x0 * 32 <= boxes[:, 0] + eps).all() and ((x0 + w) * 32 >= boxes[:, 1] - eps).all()
    assert (y0 * 32 <= boxes[:, 2] + eps).all() and ((y0 + h) * 32 >= boxes[:, 3] - eps).all()
    near = ((w >= 0.85 - eps) & (h >= 0.85 - eps)).float().mean().item()
    plain = ((w0 := reader.keeping_crops(boxes, 32, g)[2]) >= 0.85).float().mean().item()
    assert 0.45 < near < 0.62 and plain < 0.35 and w0.min() >= 0.45 - eps


@pytest.fixture(scope="module")
def shapes_reader(tmp_path_factory):
    """A shapes reader trained on 4,000 composites for a few seconds, and a seeded test set of 600."""
    from conftest import DATA, offline_cifar

    if not offline_cifar():
        pytest.skip("no CIFAR-10 copy")
    g = torch.Generator().manual_seed(0)
    tr = ImageOverlaySet("shapes", "train", str(DATA), seed=3, subset=4000).draw(0)
    te = ImageOverlaySet("shapes", "test", str(DATA), seed=3, subset=600).draw(0)
    torch.manual_seed(0)
    r = reader.Reader(3, 3)

    def batches():
        idx = torch.randint(0, len(tr), (128,), generator=g)
        return reader.image_views(tr.images[idx], g, tr.masks[idx]), tr.alt_labels[idx]

    reader.fit(r, batches, steps=STEPS, lr=0.05, say=lambda s: None)
    return r, te


STEPS = 500


@needs_cifar
def test_a_shapes_reader_reaches_the_bar_on_a_small_seeded_set(shapes_reader):
    r, te = shapes_reader
    acc = (reader.read(r, normalize(te.images.float() / 255)) == te.alt_labels).float().mean().item()
    assert acc >= 0.98, acc


@needs_cifar
def test_replacing_the_overlay_destroys_its_label_and_an_identity_view_never_does(shapes_reader):
    r, te = shapes_reader
    oracle = store.Oracle("alt", r, 1.0, 3, {})
    clean = normalize(te.images.float() / 255)
    assert label_destruction({"alt": oracle}, clean, clean, {"alt": te.alt_labels})["alt_destroyed"] == 0.0
    # the same photos with another shape pasted where the first one was
    other, labels = overlays.apply("shapes", te.base, torch.Generator().manual_seed(99))
    moved = labels != te.alt_labels
    view = normalize(other.float() / 255)
    out = label_destruction({"alt": oracle}, clean[moved], view[moved], {"alt": te.alt_labels[moved]})
    assert out["alt_destroyed"] >= 0.95
    # and the photo without its shape: the oracle can only guess, so most views are destroyed
    bare = label_destruction({"alt": oracle}, clean, normalize(te.base.float() / 255), {"alt": te.alt_labels})
    assert 0.5 < bare["alt_destroyed"] < 0.85  # about 2/3 for three balanced shapes


@needs_cifar
def test_oracles_are_trained_once_per_configuration_and_a_run_records_destruction(tmp_path, data_dir,
                                                                                    monkeypatch, capfd):
    monkeypatch.setattr(store, "STEPS", {k: 3 for k in store.STEPS})           # a few steps: the plumbing
    monkeypatch.setattr(store, "path", lambda cfg,
                        label: tmp_path / "oracles" / f"{store.key(cfg, label)}.pt")
    said = []
    kw = dict(overlay="shapes", preset="quick", subset=256, test_subset=128, batch_size=64, epochs=2,
              progress=False, device="cpu", data_dir=data_dir)
    m = train.pretrain(out_dir=str(tmp_path / "a"), **kw)
    # with stdout redirected (here pytest's capture, in a notebook the kernel's) the training of the oracles
    # is also told on the process's own stderr, as epochs are: papermill's terminal shows it
    assert "oracle alt: training shapes-alt" in capfd.readouterr().err
    history = [json.loads(line) for line in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    assert all(0 <= row["alt_destroyed"] <= 1 and 0 <= row["main_destroyed"] <= 1 for row in history)
    assert 0 <= m["alt_destroyed"] <= 1 and 0 <= m["oracle_accuracy_alt"] <= 1 and "oracle_accuracy_main" in m
    files = sorted(p.name for p in (tmp_path / "oracles").glob("*.pt"))
    assert files == ["shapes-alt-opacity1-size1-seed0-3steps-v1.pt",
                     "shapes-main-opacity1-size1-seed0-3steps-v1.pt"]
    cfg = config.resolve(config.make(**kw), cuda_available=False)
    again = store.for_run(cfg, None, torch.device("cpu"), say=said.append)
    assert all("cached" in s for s in said) and set(again) == {"alt", "main"}
    # opacity 0: nothing to read, so no alt oracle
    blank = config.resolve(config.make(**{**kw, "overlay_opacity": 0.0}), cuda_available=False)
    assert store.labels_to_read(blank) == ["main"]
    assert store.key(blank, "main") != store.key(cfg, "main")
    # and without a visible overlay the photos are the same for every seed and overlay: one oracle for all
    other = config.resolve(config.make(**{**kw, "overlay": "none", "seed": 4}), cuda_available=False)
    assert store.key(blank, "main") == store.key(other, "main") == "plain-main-3steps-v1"
    # an image reader does not depend on the run's seed (the seed only places the overlays), opacity does
    reseeded = config.resolve(config.make(**{**kw, "seed": 2}), cuda_available=False)
    assert store.key(reseeded, "alt") == store.key(cfg, "alt")
    half = config.resolve(config.make(**{**kw, "overlay_opacity": 0.5}), cuda_available=False)
    assert store.key(half, "alt") != store.key(cfg, "alt")
    # the digit reader's crops (half of them near full size) are part of its name; its class reader's are not
    digits = config.resolve(config.make(**{**kw, "overlay": "digits"}), cuda_available=False)
    assert store.key(digits, "alt") == "digits-alt-opacity1-size1-seed0-nearfull0.5-3steps-v1"
    assert store.key(digits, "main") == "digits-main-opacity1-size1-seed0-3steps-v1"


def test_the_view_explorer_loads_only_cached_oracles(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "path", lambda cfg, label: tmp_path / f"{label}.pt")
    monkeypatch.setattr(shipped, "find", lambda key, recipe: None)  # none shipped for this configuration
    cfg = config.resolve(config.make(overlay="shapes", device="cpu"))
    trained = []
    monkeypatch.setattr(store, "load_or_train", lambda c, label, *a, **k: trained.append(label) or label)
    assert store.for_run(cfg, None, "cpu", train=False) == {}
    (tmp_path / "main.pt").write_bytes(b"")
    assert store.for_run(cfg, None, "cpu", train=False) == {"main": "main"} and trained == ["main"]


# ---------------------------------------------------------------------------- readers shipped in the package
def tiny_blob(cfg, label: str, accuracy: float = 0.5) -> dict:
    """A reader blob as store.train writes it, with untrained weights (the plumbing, not the reading)."""
    torch.manual_seed(0)
    k = 3 if label == "alt" else 10
    return {"label": label, "state": reader.Reader(3, k).state_dict(), "accuracy": accuracy, "num_classes": k,
            "in_channels": 3, "side": 32, "meta": {"key": store.key(cfg, label), "steps": 10}}


def test_a_run_uses_a_shipped_reader_only_when_its_key_and_recipe_match(tmp_path, monkeypatch):
    # a cache of this test's own: the session's shared one may hold this key from an earlier test's run
    monkeypatch.setattr(store, "path", lambda cfg, label: tmp_path / "cache" / f"{store.key(cfg, label)}.pt")
    monkeypatch.setattr(shipped, "FOLDER", tmp_path / "shipped")
    monkeypatch.setattr(shipped, "MANIFEST", tmp_path / "shipped" / "manifest.json")
    cfg = config.resolve(config.make(overlay="shapes", device="cpu", data_dir=str(tmp_path)))
    blob = tiny_blob(cfg, "main", accuracy=0.61)
    path = shipped.write(blob, {"key": store.key(cfg, "main"), "recipe": store.recipe(cfg, "main"),
                                "accuracy": 0.61})
    assert path.stat().st_size < 0.4e6  # half precision: about half of the float32 file
    said = []
    oracle = store.load_or_train(cfg, "main", None, torch.device("cpu"), say=said.append)
    assert oracle.accuracy == 0.61 and "shipped with featdrop" in said[0]
    assert not store.path(cfg, "main").exists()  # nothing was trained or cached
    # the weights come back in float32, equal to the half-precision ones
    w = dict(oracle.reader.state_dict())["head.weight"]
    assert w.dtype == torch.float32 and torch.equal(w, blob["state"]["head.weight"].half().float())
    # another recipe (here a new recipe version) never loads it: the key names the data, the recipe the rest
    monkeypatch.setattr(store, "VERSION", store.VERSION + 1)
    assert shipped.find(store.key(cfg, "main"), store.recipe(cfg, "main")) is None
    monkeypatch.setattr(store, "VERSION", store.VERSION - 1)
    monkeypatch.setattr(store, "BATCH", 128)  # same key, same version, another batch: stale, not used
    assert shipped.find(store.key(cfg, "main"), store.recipe(cfg, "main")) is None


def test_the_shipped_readers_are_the_configurations_featdrop_uses_and_small():
    entries = shipped.manifest()
    if not entries:
        pytest.skip("no readers shipped in this checkout")
    total = sum((shipped.FOLDER / e["file"]).stat().st_size for e in entries.values())
    assert total < 10e6, total  # the package grows by less than 10 MB
    for key, e in entries.items():
        assert e["key"] == key and (shipped.FOLDER / e["file"]).exists()
        assert e["command"].startswith("featdrop oracles train overlay=") and "--ship" in e["command"]
        assert e["recipe"]["steps"] == int(key.split("steps")[0].rsplit("-", 1)[1])
    # every image configuration of shipped.CONFIGS is there (with the code's recipe: the real step counts)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store, "STEPS", store.RECIPE_STEPS)
        configs = command.shipped_configs({"device": "cpu"})
        wanted = [(c, lb) for c in configs for lb in store.labels_to_read(c)]
        missing = [store.key(c, lb) for c, lb in wanted if shipped.find(store.key(c, lb), store.recipe(c, lb))
                   is None]
    assert not missing, missing


@needs_cifar
def test_every_shipped_reader_reads_its_check_items_as_recorded():
    """Each shipped reader's clean accuracy on its 1,000 check test composites, against its manifest (0.01:
    the same weights on another CPU's kernels)."""
    rows = command.check(say=lambda s: None)
    if not rows:
        pytest.skip("no readers shipped in this checkout")
    off = {r["key"]: (r["now"], r["recorded"]) for r in rows if abs(r["now"] - r["recorded"]) > 0.01}
    assert not off, off
