"""The viewmaker game in one pass (game="simultaneous"): on the same weights, batch and noise its encoder
update is the alternating game's encoder update, bit for bit; the viewmaker receives minus the gradient of
the loss at the encoder before the update; every objective's terms reach both players; a run resumes
exactly."""
import copy

import pytest
import torch
from conftest import needs_cifar, resumes_exactly

from featdrop import config, rundir
from featdrop.data.base import Data
from featdrop.lab.concurrency import synthetic_batch
from featdrop.train import Trainer
from featdrop.views.modality import image_modality

TINY = dict(overlay="shapes", oracles=False, subset=256, test_subset=128, batch_size=64, epochs=2,
            encoder="convnet", viewmaker_width=8, progress=False, knn_k=20, device="cpu", views="viewmaker")


def trainer(tmp_path, **fields):
    cfg = config.make(**{**TINY, "out_dir": str(tmp_path / "run"), "data_dir": str(tmp_path), **fields})
    return Trainer(cfg, data=Data(image_modality(), None, None, 10, 3))


def params(module):
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("loss", ["reference", "simclr", "ifm"])
def test_the_encoder_update_equals_the_alternating_one(tmp_path, loss):
    alt, sim = trainer(tmp_path, loss=loss), trainer(tmp_path, loss=loss, game="simultaneous")
    assert all(torch.equal(a, b) for a, b in zip(params(alt.encoder), params(sim.encoder)))  # same weights
    raw = synthetic_batch(64, "cpu")
    before = params(sim.encoder)
    # the alternating game's encoder step on views made without gradient, from noise seeded 7 ...
    alt.encoder_step(*alt.views(raw, torch.Generator().manual_seed(7), grad=False))
    # ... and the one-pass step, whose views come from the same noise
    sim.simultaneous_step(raw, torch.Generator().manual_seed(7))
    after_alt, after_sim = params(alt.encoder), params(sim.encoder)
    assert any(not torch.equal(a, b) for a, b in zip(before, after_sim))  # it did move
    assert all(torch.equal(a, b) for a, b in zip(after_alt, after_sim))   # exactly as the alternating step


@pytest.mark.parametrize("loss,supervise", [("reference", None), ("supcon", "main"), ("ae", "main")])
def test_the_viewmaker_gets_minus_the_loss_gradient_at_the_pre_update_encoder(tmp_path, loss, supervise):
    sim = trainer(tmp_path, loss=loss, supervise=supervise, game="simultaneous")
    ref = copy.deepcopy(sim)  # the encoder, heads and viewmaker before the step
    raw = synthetic_batch(64, "cpu")
    labels = torch.arange(64) % 10 if supervise else None
    clean = sim.data.modality.clean(raw) if "decoder" in sim.aux else None
    # the gradient of the loss (every term: contrastive, CE head, reconstruction) w.r.t. the viewmaker, at the
    # encoder as it was before the step, on the views the step makes (same noise)
    total, _ = ref.loss(*ref.views(raw, torch.Generator().manual_seed(3), grad=True), labels, clean)
    grads = torch.autograd.grad(total, list(ref.viewmaker.parameters()), allow_unused=True)
    vm_before = params(sim.viewmaker)
    out = sim.simultaneous_step(raw, torch.Generator().manual_seed(3), labels, clean)
    assert out["viewmaker_loss"] == -out["loss"] and torch.isclose(out["loss"], total.detach())
    used = [(p.grad, g) for p, g in zip(sim.viewmaker.parameters(), grads) if g is not None]
    assert len(used) > 10 and all(torch.allclose(pg, -g, atol=1e-6, rtol=1e-5) for pg, g in used)
    # the viewmaker then stepped (Adam) on those negated gradients: a step against the gradient of -L
    assert any(not torch.equal(a, b) for a, b in zip(vm_before, params(sim.viewmaker)))


def test_the_game_is_checked_and_recorded(tmp_path):
    with pytest.raises(config.ConfigError, match="'game' = 'together' is invalid: allowed one of alter"):
        config.make(game="together")
    assert config.make().game == "alternating"  # the reference's game is the default


@needs_cifar
def test_a_simultaneous_run_resumes_exactly(tmp_path, data_dir):
    resumes_exactly(tmp_path, **TINY, game="simultaneous", data_dir=data_dir)
    history = rundir.read_history(tmp_path / "full" / "history.jsonl")
    # one pass a step: the viewmaker's loss is minus the encoder's, step by step, so on average too
    assert all(abs(r["viewmaker_loss"] + r["loss"]) < 1e-5 for r in history)
