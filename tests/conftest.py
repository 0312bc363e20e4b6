import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FEATDROP_DATA") or ROOT / "data")

torch.set_num_threads(min(2, torch.get_num_threads()))


def offline_cifar():
    return (DATA / "cifar10" / "train").is_dir() or (DATA / "featdrop_cache" / "cifar10_train.pt").exists()


needs_cifar = pytest.mark.skipif(not offline_cifar(), reason=f"no CIFAR-10 copy under {DATA} (run .ci/run)")


def needs_module(name: str, what: str):
    """Skip only the tests that use ``name`` when it is not installed (an image without the dev extras)."""
    return pytest.mark.skipif(importlib.util.find_spec(name) is None,
                              reason=f"{name} is not installed: {what} (pip install -e '.[dev]' installs it)")


needs_papermill = needs_module("papermill", "notebooks cannot be executed")
needs_nbformat = needs_module("nbformat", "notebooks cannot be read")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU here (torch.cuda.is_available() is False)")


@pytest.fixture
def data_dir():
    return str(DATA)


def untimed(history):
    """History rows without their wall-clock fields (epoch_s, images_per_s, monitor_s, health_s, wall_s_total,
    ...): what a resumed run must reproduce bit for bit."""
    return [{k: v for k, v in row.items() if not (k.endswith("_s") or k.startswith("wall_"))}
            for row in history]


def resumes_exactly(tmp_path, **kw) -> tuple[dict, dict]:
    """A run stopped after its first epoch and run again ends with an uninterrupted run's metrics and history
    (timings aside); returns both runs' metrics."""
    from featdrop import rundir, train

    full = train.pretrain(out_dir=str(tmp_path / "full"), **kw)
    assert train.pretrain(out_dir=str(tmp_path / "part"), stop_after=1, **kw) == {"stopped_at_epoch": 1}
    assert len(rundir.read_history(tmp_path / "part" / "history.jsonl")) == 1
    resumed = train.pretrain(out_dir=str(tmp_path / "part"), **kw)
    assert resumed["resumed"] is True
    for key in ("probe_main", "probe_alt", "knn_main", "knn_alt", "final_loss"):
        assert resumed[key] == full[key], key
    assert untimed(rundir.read_history(tmp_path / "part" / "history.jsonl")) == \
        untimed(rundir.read_history(tmp_path / "full" / "history.jsonl"))
    return full, resumed


@pytest.fixture(autouse=True)
def quick_oracles(monkeypatch, tmp_path_factory):
    """A run in a test reads its views with label oracles trained for a few steps into this session's own
    folder: no test trains the real readers (minutes each on a CPU) or reads a developer's cached ones, so
    a fresh clone and a used checkout test the same thing. Tests of the readers themselves set their own."""
    from featdrop.oracles import store

    folder = tmp_path_factory.getbasetemp() / "oracles"
    monkeypatch.setattr(store, "STEPS", {k: 10 for k in store.STEPS})
    monkeypatch.setattr(store, "path", lambda cfg, label: folder / f"{store.key(cfg, label)}.pt")


class NotebookFailed(Exception):
    """A notebook run that papermill reported as failed; the message is the end of its stderr."""


def run_notebook(name: str, out, /, **params) -> dict:
    """notebooks/<name>.ipynb through papermill's command line, in a process of its own, as a user runs it;
    returns the executed notebook's JSON. One papermill client per process: in-process, after other
    notebooks, papermill waited forever for a kernel that had finished (seen twice in fresh clones, in two
    different tests). A cell that runs past 10 minutes fails the test instead of hanging the suite."""
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / f"{name}.ipynb"), str(out),
           "-y", json.dumps(params), "-k", "python3", "--cwd", str(ROOT), "--no-progress-bar",
           "--execution-timeout", "600"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise NotebookFailed(done.stderr[-4000:])
    return json.loads(Path(out).read_text())
