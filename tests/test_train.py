"""Training: the loss goes down, runs resume to identical results, non-finite losses stop cleanly."""
import json

import pytest
import torch
from conftest import needs_cifar, resumes_exactly

from featdrop import errors, losses, rundir, train
from featdrop.models import ConvNet
from featdrop.views import expert as views

# device="cpu": the bit-equality below holds for fp32 CPU runs; on CUDA (bf16 autocast, cuDNN) a resumed run
# is only close to an uninterrupted one (tests/test_cuda.py states the tolerance).
TINY = dict(overlay="shapes", oracles=False, subset=256, test_subset=128, batch_size=64, epochs=2,
            encoder="convnet", viewmaker_width=8, progress=False, knn_k=20, device="cpu")


def test_a_few_steps_on_one_batch_lower_the_loss():
    """fp32 on the CPU by construction, whatever GPU the machine has (tests/test_cuda.py has the bf16 CUDA
    version). lr 0.02 keeps the descent smooth: at lr 0.05 the loss spiked in the last steps on some CPU
    kernels (AVX-512) and not on others, so the old last-step check depended on the processor."""
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    enc = ConvNet(widths=(8, 16, 32, 32)).to(cpu)
    x = torch.rand(64, 3, 32, 32, device=cpu)
    g = torch.Generator(device=cpu).manual_seed(0)
    v1, v2 = views.normalize(views.expert_views(x, g)), views.normalize(views.expert_views(x, g))
    opt = torch.optim.SGD(enc.parameters(), lr=0.02, momentum=0.9)

    def loss():
        return losses.nt_xent(enc(v1), enc(v2), 0.2)

    first = loss().item()
    for _ in range(10):
        step = loss()
        opt.zero_grad()
        step.backward()
        opt.step()
    assert loss().item() < first - 0.3  # measured: 5.05 → 4.54 with AVX-512, AVX2 and default kernels


@needs_cifar
@pytest.mark.parametrize("views_", ["expert", "viewmaker"])
def test_interrupted_then_resumed_run_matches_uninterrupted(tmp_path, data_dir, views_):
    resumes_exactly(tmp_path, **TINY, views=views_, data_dir=data_dir)
    # the run directory describes itself
    cfg = json.loads((tmp_path / "full" / "config.json").read_text())
    assert cfg["views"] == views_ and cfg["epochs"] == 2
    m = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert rundir.all_finite(m) and 0 <= m["probe_main"] <= 1 and m["device"] == "cpu"
    h = rundir.read_history(tmp_path / "full" / "history.jsonl")
    assert [r["epoch"] for r in h] == [1, 2] and all(r["images_per_s"] > 0 for r in h)
    assert ("viewmaker_loss" in h[0]) == (views_ == "viewmaker")


@needs_cifar
def test_resume_with_a_different_config_is_refused(tmp_path, data_dir):
    kw = dict(TINY, data_dir=data_dir, out_dir=str(tmp_path))
    train.pretrain(stop_after=1, **kw)
    with pytest.raises(errors.ConfigError, match="temperature"):
        train.pretrain(**{**kw, "temperature": 0.5})


@needs_cifar
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    kw = dict(TINY, data_dir=data_dir, out_dir=str(tmp_path), epochs=3)
    train.pretrain(stop_after=1, **kw)
    good = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    monkeypatch.setattr(losses, "contrastive_loss",
                        lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(errors.NonFiniteLossError, match="epoch 2.*last good checkpoint \\(epoch 1\\)"):
        train.pretrain(**kw)
    kept = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert kept["epoch"] == 1
    assert all(torch.equal(kept["encoder"][k], good["encoder"][k]) for k in good["encoder"])
    assert not (tmp_path / "metrics.json").exists()


@needs_cifar
def test_resume_treats_fields_the_checkpoint_predates_as_defaults(tmp_path, data_dir):
    kw = dict(TINY, data_dir=data_dir, out_dir=str(tmp_path))
    train.pretrain(stop_after=1, **kw)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    for field in ("noise_classes", "lr_schedule", "image_size"):  # as written before these fields existed
        del ck["config"][field]              # (the last two default to None: the preset's, resolved now)
    torch.save(ck, tmp_path / "checkpoint.pt")
    assert train.pretrain(**kw)["resumed"] is True
