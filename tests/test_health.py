"""Game-health metrics: positive accuracy, feature dropout, the viewmaker's budget on the overlay,
and a kNN monitor that samples the data instead of taking its (class-ordered) head."""
import pytest
import torch
import torch.nn.functional as F

from featdrop import config, train
from featdrop.data import overlays
from featdrop.data.base import Data, Split
from featdrop.train import monitor as health
from featdrop.views.modality import image_modality


def naive_positive_accuracy(z1, z2):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n, hits = len(z1), 0
    for i in range(2 * n):
        best, best_j = -2.0, None
        for j in range(2 * n):
            if j != i and float(z[i] @ z[j]) > best:
                best, best_j = float(z[i] @ z[j]), j
        hits += best_j == (i + n) % (2 * n)
    return hits / (2 * n)


@pytest.mark.parametrize("noise", [0.05, 0.5, 3.0])
def test_positive_accuracy_matches_a_naive_loop(noise):
    g = torch.Generator().manual_seed(int(noise * 100))
    z1 = torch.randn(24, 8, generator=g)
    z2 = z1 + noise * torch.randn(24, 8, generator=g)
    got = float(health.positive_accuracy(z1, z2))
    assert got == pytest.approx(naive_positive_accuracy(z1, z2))
    if noise == 0.05:
        assert got == 1.0  # near-identical views: every positive is the nearest


def test_overlay_budget_share_on_off_and_uniform():
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[:, 10:22, 10:22] = True                             # 144 of 1024 pixels
    on = torch.zeros(3, 3, 32, 32)
    on[:, :, 10:22, 10:22] = torch.randn(3, 3, 12, 12)
    share, area = health.overlay_budget_share(on, masks)
    assert share == pytest.approx(1.0) and area == pytest.approx(144 / 1024)
    uniform = torch.full((3, 3, 32, 32), 0.05) * torch.randint(0, 2, (1, 1, 32, 32)).mul(2).sub(1)  # ±ε
    assert health.overlay_budget_share(uniform, masks)[0] == pytest.approx(144 / 1024)
    off = torch.randn(3, 3, 32, 32) * (~masks)[:, None]
    assert health.overlay_budget_share(off, masks)[0] == 0.0


def test_dropped_fraction_on_a_constructed_case():
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    clean = torch.tensor([0, 1, 2, 0, 1, 0, 2, 2])   # right on items 0-4, wrong on 5-7
    view = torch.tensor([0, 2, 2, 1, 1, 2, 0, 1])    # of the 5 right ones, items 1 and 3 are now wrong
    assert health.dropped_fraction(clean, view, y) == pytest.approx(2 / 5)
    assert health.dropped_fraction(y, y, y) == 0.0
    assert health.dropped_fraction(y + 1, y, y) != health.dropped_fraction(y + 1, y, y)  # NaN: none right


def test_overlay_masks_are_the_overlays_pixels():
    x = torch.zeros(12, 3, 32, 32, dtype=torch.uint8)
    out, labels, masks = overlays.apply("shapes", x, torch.Generator().manual_seed(0), with_masks=True)
    shapes = overlays.shape_masks().bool()
    assert torch.equal(masks, shapes[labels])
    assert torch.equal(masks, out.sum(1) > 0)          # on black photos, exactly the painted pixels
    _, _, none = overlays.apply("none", x, torch.Generator(), with_masks=True)
    assert not none.any()


def test_knn_monitor_samples_class_ordered_data_at_random(monkeypatch, tmp_path):
    """Data on disk is in class order; the monitor used to take the first items, all of class 0,
    and so read knn_main = 1.000 at every epoch of a full-data run."""
    monkeypatch.setattr(health, "MONITOR_TRAIN", 100)
    monkeypatch.setattr(health, "MONITOR_TEST", 50)
    g = torch.Generator().manual_seed(0)

    def sorted_split(n):
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        labels = torch.arange(n) * 10 // n                 # class-ordered: 0, 0, ..., 9, 9
        return Split(images, labels, labels % 3, images, labels // 5)

    train_split, test_split = sorted_split(1000), sorted_split(500)
    data = Data(image_modality(), type("T", (), {"draw": lambda self, d: train_split,
                                                 "labels": train_split.labels})(),
                         test_split, 10, 3)
    cfg = config.make(overlay="shapes", preset="quick", device="cpu", batch_size=64, knn_k=20,
                      out_dir=str(tmp_path))
    trainer = train.Trainer(cfg, data=data)
    itr, ite = (health.monitor_indices(1000, 100, 0, 1), health.monitor_indices(500, 50, 0, 2))
    assert len(set(train_split.labels[itr].tolist())) == 10 and len(set(test_split.labels[ite].tolist())) >= 8
    row = trainer.monitor(train_split, 0)
    assert row["knn_main"] < 0.5  # random features: near chance (0.1), not the 1.0 of a one-class monitor
    assert trainer.monitor(train_split, 1)["knn_main"] == row["knn_main"]  # the same subset every epoch
