"""MoCo-v2 (loss="moco", and "moco_ifm" with IFM as the IFM code applies it): the loss against a per-query
loop; the queue holds the last steps' keys in ring order; the key encoder follows the encoder by its
momentum; ε = 0 is plain MoCo; expert and viewmaker views train; a run resumes exactly."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_cifar, resumes_exactly

from featdrop import config, losses, rundir, train
from featdrop.data.base import Data
from featdrop.lab.concurrency import synthetic_batch
from featdrop.moco import MomentumEncoder
from featdrop.models import ConvNet
from featdrop.train import Trainer
from featdrop.views.modality import image_modality

TINY = dict(overlay="shapes", oracles=False, subset=256, test_subset=128, batch_size=32, epochs=2,
            encoder="convnet", viewmaker_width=8, progress=False, knn_k=20, device="cpu", loss="moco",
            moco_queue=96, moco_bn_splits=4)


def loop_loss(q, k, queue, tau, eps=0.0, alpha=1.0):
    """MoCo's loss one query at a time, from its definition: −log softmax of the positive among
    [q·k, q·queue_1, ..., q·queue_K], cosines, with IFM's shifts."""
    def one(i, e):
        qi, ki = F.normalize(q[i], dim=0), F.normalize(k[i], dim=0)
        pos = (qi @ ki - e) / tau
        negs = [(qi @ F.normalize(n, dim=0) + e) / tau for n in queue]
        return -(pos - torch.logsumexp(torch.stack([pos, *negs]), 0))
    plain = torch.stack([one(i, 0.0) for i in range(len(q))]).mean()
    moved = torch.stack([one(i, eps) for i in range(len(q))]).mean()
    return (plain + alpha * moved) / (1 + alpha)


def test_the_loss_matches_a_per_query_loop():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    queue = F.normalize(torch.randn(10, 8, generator=g), dim=1)
    assert torch.allclose(losses.moco(q, k, queue, 0.2), loop_loss(q, k, queue, 0.2), atol=1e-5)
    assert torch.allclose(losses.moco(q, k, queue, 0.2, 0.1, 0.5), loop_loss(q, k, queue, 0.2, 0.1, 0.5),
                          atol=1e-5)
    # a query identical to its key and orthogonal to the queue: the loss is log(1 + K e^{−1/τ})
    e = torch.eye(8)
    assert math.isclose(losses.moco(e[:1], e[:1], e[1:4], 0.2).item(), math.log(1 + 3 * math.exp(-5)),
                        rel_tol=1e-5)


def test_ifm_epsilon_zero_is_plain_moco():
    g = torch.Generator().manual_seed(1)
    q, k, queue = (torch.randn(n, 4, generator=g) for n in (5, 5, 7))
    hp = config.resolve(config.make(loss="moco_ifm", ifm_epsilon=0.0, device="cpu"))
    plain = losses.contrastive_loss("moco", q, k, hp, queue=queue)
    assert torch.equal(losses.contrastive_loss("moco_ifm", q, k, hp, queue=queue), plain)
    hp_eps = config.resolve(config.make(loss="moco_ifm", ifm_epsilon=0.1, device="cpu"))
    moved = losses.contrastive_loss("moco_ifm", q, k, hp_eps, queue=queue)
    assert moved > plain  # IFM makes the positive harder and the negatives easier to confuse


def test_the_momentum_update():
    torch.manual_seed(0)
    enc = ConvNet(widths=(4, 4, 8, 8))
    m = MomentumEncoder(enc, 16, 128, momentum=0.9)
    before = [p.detach().clone() for p in m.key_encoder.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, enc.parameters()))  # a copy at the start
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(1.0)
    m.update(enc)
    for old, new, q in zip(before, m.key_encoder.parameters(), enc.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * q, atol=1e-6)
    assert not any(p.requires_grad for p in m.key_encoder.parameters())


def trainer(tmp_path, **fields):
    cfg = config.make(**{**TINY, "out_dir": str(tmp_path / "run"), "data_dir": str(tmp_path), **fields})
    return Trainer(cfg, data=Data(image_modality(), None, None, 10, 3))


def test_the_queue_holds_the_last_keys_in_ring_order(tmp_path):
    t = trainer(tmp_path)                                   # K = 96 = 3 batches of 32
    assert t.cfg.projection_head is True and t.cfg.temperature == 0.2  # MoCo-v2's MLP head and τ
    keys = []
    for step in range(5):                                   # wraps around the ring once
        t.step(synthetic_batch(32, "cpu", seed=step), torch.Generator().manual_seed(step))
        keys.append(F.normalize(t.moco_keys, dim=1))
    assert int(t.moco.ptr) == (5 * 32) % 96 and int(t.moco.steps) == 5
    # slots 0-31 hold step 3's keys, 32-63 step 4's, 64-95 still step 2's
    assert torch.allclose(t.moco.queue[:32], keys[3]) and torch.allclose(t.moco.queue[32:64], keys[4])
    assert torch.allclose(t.moco.queue[64:], keys[2])


@pytest.mark.parametrize("views,game", [("expert", "alternating"), ("viewmaker", "alternating"),
                                        ("viewmaker", "simultaneous")])
def test_moco_trains_with_expert_and_viewmaker_views(tmp_path, views, game):
    t = trainer(tmp_path, views=views, game=game, loss="moco_ifm")
    key_before = [p.detach().clone() for p in t.moco.key_encoder.parameters()]
    out = [t.step(synthetic_batch(32, "cpu", seed=s), torch.Generator().manual_seed(s)) for s in range(3)]
    assert all(torch.isfinite(o["loss"]) for o in out)
    assert any(not torch.equal(a, b) for a, b in zip(key_before, t.moco.key_encoder.parameters()))
    if views == "viewmaker":  # the viewmaker's gradient comes through the queries and the keys' views alike
        assert all(p.grad is not None for p in t.viewmaker.parameters() if p.requires_grad)


def test_bad_moco_fields_are_named():
    with pytest.raises(config.ConfigError, match="'moco_queue' = 16 is invalid: allowed at least batch_size"):
        config.make(**{**TINY, "moco_queue": 16})
    with pytest.raises(config.ConfigError, match="'moco_momentum' = 1.0 is invalid"):
        config.make(**{**TINY, "moco_momentum": 1.0})


@needs_cifar
def test_a_moco_run_resumes_exactly(tmp_path, data_dir):
    resumes_exactly(tmp_path, **{**TINY, "loss": "moco_ifm"}, data_dir=data_dir)
    ck = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    assert ck["moco"]["queue"].shape == (96, 128) and int(ck["moco"]["steps"]) == 2 * (256 // 32)


@needs_cifar
def test_the_cosine_schedule_of_moco_v2_per_epoch(tmp_path, data_dir):
    kw = dict(TINY, loss="moco", lr_schedule="cosine", epochs=3, lr=0.1, data_dir=data_dir)
    train.pretrain(out_dir=str(tmp_path / "run"), **kw)
    lrs = [r["lr"] for r in rundir.read_history(tmp_path / "run" / "history.jsonl")]
    assert lrs == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)])
    assert config.resolve(config.make(device="cpu")).lr_schedule == "constant"  # the reference's, by default
    ifm = config.resolve(config.make(device="cpu", preset="imagenet100", loss="moco_ifm",
                                     dataset="imagefolder", data_path="/somewhere", overlay="none"))
    assert (ifm.lr_schedule, ifm.lr, ifm.batch_size, ifm.epochs, ifm.encoder, ifm.image_size, ifm.moco_queue,
            ifm.moco_momentum, ifm.temperature, ifm.ifm_epsilon, ifm.projection_head) == \
        ("cosine", 0.8, 512, 200, "resnet50", 224, 65536, 0.99, 0.2, 0.1, True)  # the IFM command line
