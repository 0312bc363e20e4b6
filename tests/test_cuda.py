"""CUDA only: bf16 steps learn and stay finite, a resumed CUDA run stays close to an uninterrupted one, and
the paper preset runs end to end. Skipped without a GPU; `python -m pytest -m cuda` runs just these.

On CUDA the Trainer runs bf16 autocast, channels_last and cuDNN, which are not bit-deterministic: two runs
of one config differ in the last bits, and the difference grows with the steps. So a resumed CUDA run is
*close to* an uninterrupted one (tolerance in the test below), while on the CPU it is bit-equal
(tests/test_train.py and tests/test_kill.py pin device="cpu" for that).
"""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_cifar, needs_cuda

from featdrop import config, rundir, train
from featdrop.data.base import Data
from featdrop.views.modality import image_modality

pytestmark = [pytest.mark.cuda, needs_cuda]


def smooth_images(n: int, seed: int = 0, device="cuda") -> torch.Tensor:
    """(n, 3, 32, 32) uint8 images that crops and colour jitter do not erase: random 4×4 colour fields
    upsampled bilinearly, so two views of one image still resemble each other more than other images."""
    coarse = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return (F.interpolate(coarse, size=32, mode="bilinear",
                          align_corners=False) * 255).round().to(torch.uint8).to(device)


def synthetic_trainer(out_dir, device="cuda", **fields) -> train.Trainer:
    """The paper preset's Trainer (ResNet-18, batch 256, lr 0.03, τ 0.07) on no loaded data: steps take raw
    batches."""
    cfg = config.make(**{"preset": "paper", "device": device, "out_dir": str(out_dir), "progress": False,
                         **fields})
    return train.Trainer(cfg, data=Data(image_modality(), None, None, 10, 1))


def test_the_trainer_really_runs_bf16_on_the_gpu(tmp_path):
    t = synthetic_trainer(tmp_path)
    assert t.cuda and t.amp and next(t.encoder.parameters()).is_cuda
    with torch.no_grad(), t.autocast():
        z = t.encoder(t._cl(t.data.modality.clean(smooth_images(8))))
    assert z.dtype == torch.bfloat16 and z.device.type == "cuda"


def test_a_few_bf16_steps_on_one_batch_lower_the_loss(tmp_path):
    """20 Trainer steps on one batch of 128 images (fresh views each step): the mean loss of the last three
    steps is at least 0.3 below that of the first three."""
    t = synthetic_trainer(tmp_path, views="expert")
    raw = smooth_images(128)
    g = torch.Generator(device=t.device).manual_seed(0)
    curve = [t.step(raw, g)["loss"].item() for _ in range(20)]
    assert all(math.isfinite(x) for x in curve), curve
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3 - 0.3, curve


@pytest.mark.parametrize("views", ["expert", "viewmaker"])
def test_fifty_bf16_steps_stay_finite(tmp_path, views):
    """50 paper-preset steps (batch 256, bf16), fresh batches from a pool: losses, views and weights stay
    finite."""
    t = synthetic_trainer(tmp_path, views=views)
    pool = smooth_images(2048, seed=1)
    g = torch.Generator(device=t.device).manual_seed(0)
    outs = [t.step(pool[torch.randperm(len(pool), generator=g, device=t.device)[:256]], g) for _ in range(50)]
    for key in ("loss", "viewmaker_loss") if views == "viewmaker" else ("loss",):
        values = torch.stack([o[key].float() for o in outs])
        assert torch.isfinite(values).all(), (key, values.tolist())
    x1, x2 = t.views(pool[:256], g, grad=False)
    assert torch.isfinite(x1).all() and torch.isfinite(x2).all()
    models = [t.encoder] + ([t.viewmaker] if t.viewmaker is not None else [])
    assert all(torch.isfinite(p).all() for m in models for p in m.parameters())


@needs_cifar
@pytest.mark.parametrize("views", ["expert", "viewmaker"])
def test_resumed_cuda_run_is_close_to_an_uninterrupted_one(tmp_path, data_dir, views):
    """Tolerance: probe and kNN accuracies (1,000 test images) within 0.05 absolute of the uninterrupted run;
    the final loss, and each epoch's mean loss, within 5% relative. (On the CPU the same check is exact.)"""
    kw = dict(preset="paper", device="cuda", overlay="shapes", views=views, subset=2048, test_subset=1000,
              epochs=2, progress=False, data_dir=data_dir)
    full = train.pretrain(out_dir=str(tmp_path / "full"), **kw)
    assert train.pretrain(out_dir=str(tmp_path / "part"), stop_after=1, **kw) == {"stopped_at_epoch": 1}
    resumed = train.pretrain(out_dir=str(tmp_path / "part"), **kw)
    assert (resumed["resumed"] is True and resumed["device"].startswith("cuda")
            and full["device"].startswith("cuda"))
    for key in ("probe_main", "probe_alt", "knn_main", "knn_alt"):
        assert abs(resumed[key] - full[key]) <= 0.05, (key, resumed[key], full[key])
    assert resumed["final_loss"] == pytest.approx(full["final_loss"], rel=0.05)
    h_part = rundir.read_history(tmp_path / "part" / "history.jsonl")
    h_full = rundir.read_history(tmp_path / "full" / "history.jsonl")
    assert [r["epoch"] for r in h_part] == [r["epoch"] for r in h_full] == [1, 2]
    for a, b in zip(h_part, h_full):
        assert a["loss"] == pytest.approx(b["loss"], rel=0.05), (a["epoch"], a["loss"], b["loss"])


@needs_cifar
@pytest.mark.parametrize("views", ["expert", "viewmaker"])
def test_short_paper_preset_run_writes_its_metrics(tmp_path, data_dir, views):
    run = tmp_path / "run"
    m = train.pretrain(preset="paper", device="cuda", oracles=False, overlay="shapes", views=views,
                       subset=512, test_subset=256, epochs=1, progress=False, data_dir=data_dir,
                       out_dir=str(run))
    saved = rundir.read_json(run / "metrics.json")
    for key in ("probe_main", "probe_alt", "knn_main", "knn_alt"):
        assert 0 <= saved[key] <= 1 and saved[key] == pytest.approx(m[key])
    assert math.isfinite(saved["final_loss"]) and rundir.all_finite(saved)
    assert saved["device"].startswith("cuda") and saved["device_name"] != "cpu"
    assert saved["preset"] == "paper" and saved["encoder"] == "resnet18" and saved["epochs"] == 1
    cfg = rundir.read_json(run / "config.json")
    assert cfg["batch_size"] == 256 and cfg["lr"] == 0.03 and cfg["views"] == views
    history = rundir.read_history(run / "history.jsonl")
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
