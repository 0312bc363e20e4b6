"""Supervised contrastive learning in the training loop (issue 13): coarse labels, the loss/supervise
contract, τ defaults, and supervised runs end to end."""
import json

import pytest
import torch
from conftest import needs_cifar, run_notebook

from featdrop import config, train
from featdrop.config import ConfigError
from featdrop.data import base as data

TINY = dict(overlay="shapes", oracles=False, subset=256, test_subset=128, batch_size=64, epochs=1,
            encoder="convnet", viewmaker_width=8, progress=False, knn_k=20, device="cpu", preset="quick")


def test_coarse_mapping_is_thanos_sparse2coarse():
    # thanos-code: airplane, automobile, ship, truck → 1 (vehicles); the six animals → 0
    names = dict(zip(data.CIFAR10_CLASSES, data.coarse_labels(torch.arange(10)).tolist()))
    assert names == {"airplane": 1, "automobile": 1, "bird": 0, "cat": 0, "deer": 0, "dog": 0, "frog": 0,
                     "horse": 0, "ship": 1, "truck": 1}
    assert data.COARSE_CLASSES[1] == "vehicles"


@pytest.mark.parametrize("kw,says", [
    (dict(loss="supcon"), "set supervise"), (dict(loss="ae"), "set supervise"),
    (dict(supervise="coarse"), "set loss to one of supcon, spread, ae"),
    (dict(supervise="coarse", loss="simclr"), "set loss"),
    (dict(supervise="alt", loss="supcon", overlay="none"), "no alternate label"),
    (dict(supervise="coarse", loss="spread", overlay="noise"), "CIFAR-10 only"),
    (dict(loss="simclr", ce_weight=0.5), "ce_weight"),
])
def test_bad_loss_and_supervise_combinations_say_what_to_set(kw, says):
    with pytest.raises(ConfigError, match=says):
        config.make(**kw)


def test_temperature_defaults_per_loss_family():
    r = lambda **kw: config.resolve(config.make(**kw), cuda_available=False)  # noqa: E731
    assert r().temperature == 0.07 and r(loss="simclr").temperature == 0.07
    assert r(loss="spread", supervise="coarse").temperature == 0.5
    assert r(loss="supcon", supervise="main").temperature == 0.5
    assert r(loss="supcon", supervise="main", temperature=0.2).temperature == 0.2  # an explicit τ wins
    assert r(loss="spread", supervise="coarse").out_dir.endswith("shapes-expert-spread-coarse-seed0")


@needs_cifar
@pytest.mark.parametrize("loss,extra", [("spread", dict(ce_weight=0.5)), ("ae", {})])
def test_supervised_runs_train_their_heads_and_probe_every_label(tmp_path, data_dir, loss, extra):
    m = train.pretrain(**TINY, loss=loss, supervise="coarse", data_dir=data_dir, out_dir=str(tmp_path),
                       **extra)
    for key in ("probe_main", "probe_alt", "probe_coarse"):
        assert 0 <= m[key] <= 1
    assert m["chance_coarse"] == pytest.approx(0.6, abs=0.1)  # 6 of 10 classes are animals
    assert m["supervise"] == "coarse" and m["loss"] == loss
    row = json.loads((tmp_path / "history.jsonl").read_text().splitlines()[0])
    assert row["ce_loss"] > 0 and (("recon_loss" in row) == (loss == "ae"))
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert "ce.weight" in ck["aux"] and (("decoder.fc.weight" in ck["aux"]) == (loss == "ae"))


@needs_cifar
def test_pretrain_notebook_runs_supervised_on_coarse_labels(tmp_path, data_dir):
    pytest.importorskip("papermill", reason="papermill is not installed (pip install -e .)")
    run = tmp_path / "run"
    params = dict(TINY, supervise="coarse", loss="spread", data_dir=data_dir, out_dir=str(run))
    del params["knn_k"]
    run_notebook("pretrain", tmp_path / "out.ipynb", **params)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["probe_coarse"] <= 1 and metrics["loss"] == "spread"
    assert "coarse" in (tmp_path / "out.ipynb").read_text()  # the metrics table lists the coarse label
