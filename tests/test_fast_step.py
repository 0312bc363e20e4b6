"""The restructured training step: the same algorithm with the overhead removed (issue 10).

- the encoder step computes the loss the plain formula gives on the same views;
- the viewmaker makes both views in one call on the stacked 2B batch: with the same per-example noise
  this equals two separate calls exactly (instance norm and noise are per example);
- the viewmaker traces without graph breaks (its noise comes in as tensors, no generator inside);
- a training step never reads a value back from the device (no host sync inside the epoch).
"""
import copy

import pytest
import torch

from featdrop import config, losses, train
from featdrop.data.base import Data
from featdrop.views.modality import image_modality
from featdrop.views.viewmaker import Viewmaker


def synthetic_trainer(tmp_path, **kw):
    """A Trainer on synthetic data (no data set needed): what the benchmark does."""
    cfg = config.make(overlay="shapes", preset="quick", device="cpu", batch_size=16, viewmaker_width=8,
                      out_dir=str(tmp_path), progress=False, **kw)
    return train.Trainer(cfg, data=Data(image_modality(), None, None, 10, 3))


def raw_batch(n=16, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("loss", ["reference", "simclr", "ifm"])
def test_encoder_step_loss_is_the_formula_on_the_same_views(tmp_path, loss):
    trainer = synthetic_trainer(tmp_path, loss=loss)
    x1, x2 = trainer.views(raw_batch(), torch.Generator().manual_seed(1), grad=False)
    before = copy.deepcopy(trainer.encoder)                    # the step updates the encoder afterwards
    out = trainer.encoder_step(x1, x2)
    c = trainer.cfg
    with torch.no_grad():
        z1, z2 = before(x1), before(x2)
        expected = {"reference": lambda: losses.reference_simclr(z1, z2, c.temperature),
                    "simclr": lambda: losses.nt_xent(z1, z2, c.temperature),
                    "ifm": lambda: losses.ifm(z1, z2, c.temperature, c.ifm_epsilon, c.ifm_alpha)}[loss]()
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert set(out) == {"loss", "pos_acc"}


def test_one_2b_viewmaker_call_equals_two_calls_with_the_same_noise():
    torch.manual_seed(0)
    vm = Viewmaker(3, 0.05, width=8)
    x = torch.rand(6, 3, 32, 32)
    n1, n2 = (vm.draw_noise(x, torch.Generator().manual_seed(1)),
              vm.draw_noise(x, torch.Generator().manual_seed(2)))
    both = vm(torch.cat([x, x]), noise=[torch.cat([a, b]) for a, b in zip(n1, n2)])
    v1, v2 = both.chunk(2)
    assert torch.allclose(v1, vm(x, noise=n1), atol=1e-5) and torch.allclose(v2, vm(x, noise=n2), atol=1e-5)
    # the budget holds exactly per example, and the two views differ
    for v in (v1, v2):
        assert torch.allclose((v - x).abs().mean(dim=(1, 2, 3)), torch.full((6,), 0.05), rtol=2e-3)
    assert not torch.allclose(v1, v2)


def test_trainer_views_of_a_viewmaker_run_differ_and_keep_the_budget(tmp_path):
    trainer = synthetic_trainer(tmp_path, views="viewmaker")
    raw = raw_batch()
    with torch.no_grad():
        v1, v2 = trainer.views(raw, torch.Generator().manual_seed(3), grad=False)
    base = trainer.data.modality.to_encoder(raw.float() / 255)
    std = torch.tensor((0.247, 0.243, 0.261))[:, None, None]
    for v in (v1, v2):  # back to pixel units: mean |δ| = ε per example
        assert torch.allclose(((v - base) * std).abs().mean(dim=(1, 2, 3)), torch.full((16,), 0.05),
                              rtol=5e-3)
    assert not torch.allclose(v1, v2)


def test_viewmaker_traces_without_graph_breaks():
    torch.manual_seed(0)
    vm = Viewmaker(3, 0.05, width=8)
    x = torch.rand(4, 3, 32, 32)
    noise = vm.draw_noise(x, torch.Generator().manual_seed(0))
    explained = torch._dynamo.explain(vm)(x, noise=noise)
    assert explained.graph_break_count == 0 and explained.graph_count == 1


@pytest.mark.parametrize("views", ["expert", "viewmaker"])
def test_an_epoch_reads_the_device_once_however_many_steps(tmp_path, monkeypatch, views):
    """Inside the epoch nothing reads a tensor's value in Python but the one non-finite check at its
    end (the old loop checked the loss every step). The optimisers' own steps are exempt: on a CPU,
    torch's Adam reads its step counter (a CPU tensor); on CUDA the fused optimisers do not."""
    from featdrop.data import base

    trainer = synthetic_trainer(tmp_path, views=views)
    images = raw_batch(80)
    labels = torch.arange(80) % 10
    split = base.Split(images, labels, labels % 3, images)
    trainer.data.train = type("T", (), {"draw": lambda self, d: split})()
    monkeypatch.setattr(trainer, "monitor", lambda split, epoch: {})  # the monitor runs after the steps
    reads = [0]
    armed = [True]

    def exempt(step):
        def run(*a, **k):
            armed[0] = False
            try:
                return step(*a, **k)
            finally:
                armed[0] = True
        return run

    for opt in (trainer.opt, trainer.vm_opt):
        if opt is not None:
            monkeypatch.setattr(opt, "step", exempt(opt.step))
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _fn=original, **k):
            reads[0] += armed[0]
            return _fn(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    steps_before = reads[0]
    row = trainer.train_epoch(0)                      # 80 // 16 = 5 steps
    means = [k for k in row if k not in ("epoch", "lr", "epoch_s", "images_per_s", "viewmaker_lr",
                                         "monitor_s")]
    loop_reads = reads[0] - steps_before - len(means)
    monkeypatch.undo()
    assert loop_reads == 1, loop_reads  # int(first_bad) only; the per-key means are read after the loop
    assert row["loss"] == row["loss"] and 0 <= row["pos_acc"] <= 1
