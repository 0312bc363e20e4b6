"""Runs that cannot be corrupted, and bounds where the physics sets them (issue 12)."""
import os
import time

import pytest
import torch
from conftest import needs_cifar

from featdrop import config, errors, runlock, train
from featdrop.config import ConfigError

TINY = dict(overlay="shapes", oracles=False, subset=256, test_subset=128, batch_size=64, epochs=2,
            encoder="convnet", viewmaker_width=8, progress=False, knn_k=20, device="cpu")


@needs_cifar
def test_damaged_checkpoint_gives_a_clear_error_and_is_kept(tmp_path, data_dir):
    kw = dict(TINY, data_dir=data_dir, out_dir=str(tmp_path))
    train.pretrain(stop_after=1, **kw)
    ck = tmp_path / "checkpoint.pt"
    blob = ck.read_bytes()
    ck.write_bytes(blob[: len(blob) // 3])  # a disk that filled up, a copy cut short
    with pytest.raises(errors.CheckpointError) as err:
        train.pretrain(**kw)
    msg = str(err.value)
    assert str(ck) in msg and "cannot resume" in msg and "mv " in msg and "nothing was deleted" in msg
    assert "Traceback" not in msg and err.value.__cause__ is None
    assert ck.read_bytes() == blob[: len(blob) // 3]  # untouched


def test_a_second_run_on_a_locked_directory_fails_at_once(tmp_path):
    with runlock.acquire(tmp_path / "run") as held:
        t0 = time.perf_counter()
        with pytest.raises(errors.RunLockedError) as err:
            # another open of the lock file conflicts even within one process once we drop our record
            runlock._HELD.clear()
            train.pretrain(**TINY, data_dir=str(tmp_path / "nodata"), out_dir=str(tmp_path / "run"))
        assert time.perf_counter() - t0 < 5  # before any data is loaded
        assert str(tmp_path / "run") in str(err.value) and f"pid {os.getpid()}" in str(err.value)
        assert "another out_dir" in str(err.value)
        assert held.held


@pytest.mark.parametrize("field,value,overlay,allowed", [
    ("noise_volume", 1.5, "noise", "(0, 1]"), ("noise_volume", 0.0, "noise", "positive"),
    ("overlay_size", 3.5, "shapes", "[0.1, 3]"), ("overlay_size", 2.0, "digits", "[0.1, 1.9]"),
    ("overlay_size", 1.2, "letters", "[0.1, 1]"), ("overlay_size", 0.05, "shapes", "[0.1, 3]"),
    ("budget", 1.5, "shapes", "(0, 1]"), ("momentum", 1.0, "shapes", "[0, 0.999]"),
    ("ifm_epsilon", 2.5, "shapes", "[0, 2]"), ("spread_alpha", 1.5, "shapes", "[0, 1]"),
    ("batch_size", 1, "shapes", "at least 2"), ("subset", "most", "shapes", '"all"'),
])
def test_meaningless_values_fail_naming_field_value_and_range(field, value, overlay, allowed):
    with pytest.raises(ConfigError) as err:
        config.make(overlay=overlay, **{field: value})
    msg = str(err.value)
    assert repr(field) in msg and repr(value) in msg and allowed in msg


def test_the_largest_overlay_sizes_still_fit_the_image():
    from featdrop.data import overlays, records

    x = torch.zeros(30, 3, 32, 32, dtype=torch.uint8)
    digits = torch.full((10, 28, 28), 255, dtype=torch.uint8)
    for name, kw in (("shapes", {}), ("digits", dict(digits=digits, digit_labels=torch.arange(10)))):
        size = records.OVERLAYS[name].size_max
        config.make(overlay=name, overlay_size=size)  # accepted
        _, _, masks = overlays.apply(name, x, torch.Generator().manual_seed(0), size=size, with_masks=True,
                                     **kw)
        small = overlays.apply(name, x, torch.Generator().manual_seed(0), size=1.0, with_masks=True, **kw)[2]
        assert masks.sum() > small.sum()  # bigger, and drawn (a copy off the image would vanish or wrap)
    # digits: round(10·1.9) = 19 px copies; 20 px would start at row −1 of the top copies
    assert 9 - 19 // 2 >= 0 and 21 - 19 // 2 + 19 <= 32


def test_all_the_data_can_be_said_and_survives_resolution():
    cfg = config.resolve(config.make(preset="quick", subset="all", test_subset="all"), cuda_available=False)
    assert cfg.subset == "all" and cfg.test_subset == "all"
    again = config.resolve(config.make(**{**cfg.__dict__}), cuda_available=False)  # what load_run does
    assert again.subset == "all" and config.size(again.subset) is None
    assert config.resolve(config.make(preset="quick"), cuda_available=False).subset == 5000
