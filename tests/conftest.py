import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FEATDROP_DATA") or ROOT / "data")

torch.set_num_threads(min(2, torch.get_num_threads()))


def offline_cifar():
    return (DATA / "cifar10" / "train").is_dir() or (DATA / "featdrop_cache" / "cifar10_train.pt").exists()


needs_cifar = pytest.mark.skipif(not offline_cifar(), reason=f"no CIFAR-10 copy under {DATA} (run .ci/run)")


@pytest.fixture
def data_dir():
    return str(DATA)
