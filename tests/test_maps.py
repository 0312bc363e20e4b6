"""Embedding maps, run figures and experiment trackers (TensorBoard read back with its own reader, W&B in its
offline mode)."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import needs_cifar, needs_module, run_notebook

from featdrop import train
from featdrop.viz import embedding

TINY = dict(overlay="shapes", preset="quick", oracles=False, subset=256, test_subset=128, batch_size=64,
            epochs=2, encoder="convnet", viewmaker_width=8, device="cpu")


def brute_force_knn_accuracy(points, labels, k):
    """The map's number counted by hand: the majority label of each point's k nearest others."""
    hits = 0
    for i in range(len(points)):
        d = np.sqrt(((points - points[i]) ** 2).sum(1))
        d[i] = np.inf
        near = np.argsort(d)[:k]
        hits += np.bincount(labels[near], minlength=labels.max() + 1).argmax() == labels[i]
    return hits / len(points)


def test_the_maps_neighbourhood_accuracy_is_the_hand_counted_majority_vote():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(80, 2)).astype(np.float32)
    labels = rng.integers(0, 4, 80)
    labels[:40] = (points[:40, 0] > 0).astype(int)  # half of them follow the x axis
    for k in (1, 5, 10):
        assert embedding.neighbourhood_accuracy(points, labels, k) == pytest.approx(
            brute_force_knn_accuracy(points, labels, k), abs=1e-6)  # float32: exact counts


def test_a_map_of_features_that_encode_only_the_overlay_follows_the_overlay_and_not_the_class():
    rng = np.random.default_rng(1)
    n = 900
    alt, main = rng.integers(0, 3, n), rng.integers(0, 10, n)   # independent labels
    centres = rng.normal(size=(3, 64)) * 3
    features = torch.tensor(centres[alt] + rng.normal(size=(n, 64)), dtype=torch.float32)
    points = embedding.map_2d(features, seed=0)
    assert points.shape == (n, 2) and np.isfinite(points).all()
    s = embedding.scores(points, {"main": main, "alt": alt})
    assert s["alt"] > 0.95                  # the overlay's groups are the map's neighbourhoods
    assert abs(s["main"] - 0.1) < 0.06      # the class is at chance (1/10): the features do not carry it
    # the same map scored against labels that the features do carry, shuffled, falls to chance
    assert embedding.neighbourhood_accuracy(points, rng.permutation(alt)) < 0.45


def test_a_maps_items_are_fixed_by_the_seed_and_cover_small_test_sets():
    a, b = embedding.items(10_000, seed=3), embedding.items(10_000, seed=3)
    assert torch.equal(a, b) and len(a) == embedding.MAP_ITEMS and len(set(a.tolist())) == len(a)
    assert not torch.equal(a, embedding.items(10_000, seed=4))
    assert torch.equal(embedding.items(300, seed=3), torch.arange(300))


@needs_cifar
def test_a_run_with_tensorboard_writes_figures_maps_and_events_that_tensorboard_reads(tmp_path, data_dir,
                                                                                     capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    m = train.pretrain(out_dir=str(out), data_dir=data_dir, tracker="tensorboard", progress=True,
                       views="viewmaker", **TINY)
    # one line per epoch on the terminal
    epoch_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"]
    # what decides a CPU run's numbers besides its config (docs/running.md#reproducibility) is recorded
    assert m["threads"] == torch.get_num_threads() and m["torch_version"] == torch.__version__
    assert m["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    # every figure, and the map's numbers are those of its saved points
    for name in ("inputs", "views", "loss_curves", "probes", "embedding"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 5_000, name
    saved = np.load(out / "figures" / "embedding.npz")
    assert saved["points"].shape == (128, 2) and sorted(saved["items"].tolist()) == list(range(128))
    assert m["map_knn_main"] == pytest.approx(embedding.neighbourhood_accuracy(saved["points"],
                                                                               saved["labels_main"]))
    assert m["map_knn_alt"] == pytest.approx(embedding.neighbourhood_accuracy(saved["points"],
                                                                              saved["labels_alt"]))
    # TensorBoard's own reader: every numeric field of history.jsonl, per epoch, with its value
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    numeric = {k for row in history for k, v in row.items()
               if isinstance(v, (int, float)) and k != "epoch" and math.isfinite(v)}
    assert numeric <= set(acc.Tags()["scalars"]) and {"loss", "knn_main", "viewmaker_loss"} <= numeric
    for key in ("loss", "knn_alt"):
        logged = acc.Scalars(key)
        assert [e.step for e in logged] == [1, 2]
        assert [e.value for e in logged] == pytest.approx([row[key] for row in history], rel=1e-6)
    # the views grid at the last epoch: 4 examples × (clean, view, perturbation) of 32-pixel images
    (image,) = acc.Images("views")
    assert image.step == 2 and (image.width, image.height) == (3 * 32, 4 * 32)
    # the hparams: the config, with the final metrics beside it
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    assert acc.Scalars("final/probe_main")[0].value == pytest.approx(m["probe_main"], rel=1e-6)
    # the projector: the map's features with both labels as metadata
    (meta,) = (out / "tensorboard").glob("*/features/metadata.tsv")
    rows = meta.read_text().splitlines()
    assert rows[0].split("\t") == ["main", "alt"] and len(rows) == 1 + 128
    names = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
    assert {r.split("\t")[0] for r in rows[1:]} <= names
    assert (out / "tensorboard" / "projector_config.pbtxt").exists()


@needs_cifar
@needs_module("wandb", "the tracker='wandb' test")
def test_a_run_with_wandb_logs_offline_into_the_run(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    m = train.pretrain(out_dir=str(out), data_dir=data_dir, tracker="wandb", progress=False, **TINY)
    (run,) = (out / "wandb").glob("offline-run-*")
    (log,) = run.glob("*.wandb")     # the offline log that `wandb sync` uploads: protobuf records
    data = log.read_bytes()
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    # every epoch's scalars and the final metrics, with their values as W&B writes them (JSON text)
    for key, value in [("loss", history[0]["loss"]), ("knn_main", history[-1]["knn_main"]),
                       ("probe_main", m["probe_main"]), ("probe_alt", m["probe_alt"])]:
        assert key.encode() in data and json.dumps(value).encode() in data, key
    assert len(list(run.glob("files/media/images/views_2_*.png"))) == 1  # the last epoch's views grid


@needs_cifar
def test_maps_of_two_runs_side_by_side_select_their_images_and_run_under_papermill(tmp_path, data_dir):
    pytest.importorskip("papermill")
    from featdrop.data import images
    from featdrop.probing.maps import MapExplorer

    runs = {}
    for views in ("expert", "viewmaker"):
        runs[views] = tmp_path / views
        train.pretrain(out_dir=str(runs[views]), data_dir=data_dir, progress=False, views=views,
                       **{**TINY, "epochs": 1})
    ui = MapExplorer([str(runs["expert"]), str(runs["viewmaker"])], label="alt", box=((0, 0.5), (0, 1)))
    first = ui.runs[0]
    rows = first.inside(((0, 0.5), (0, 1)))
    rel_x = (first.points[:, 0] - first.points[:, 0].min()) / np.ptp(first.points[:, 0])
    assert sorted(rows.tolist()) == np.nonzero(rel_x <= 0.5)[0].tolist()    # the left half of the map
    # a selection's images are the run's own test images of those items, overlays as drawn in the run
    test = images.ImageOverlaySet("shapes", "test", data_dir, seed=0, subset=128).draw(0)  # TINY's test split
    assert torch.equal(first.images(rows[:5]), test.images[torch.as_tensor(first.items[rows[:5]])])
    fig = ui.figure()
    titles = [ax.get_title() for ax in fig.axes[:2]]
    assert all("coloured by overlay" in t and "10-NN accuracy in the map" in t for t in titles)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["square", "triangle", "circle"]                       # the overlay's class names
    # the notebook, through papermill, with the live controls and the static figure
    out = tmp_path / "maps.out.ipynb"
    run_notebook("maps", out, run_dirs=[str(runs["expert"]), str(runs["viewmaker"])], label="main")
    text = out.read_text()
    assert "application/vnd.jupyter.widget-view+json" in text and text.count("image/png") >= 2
