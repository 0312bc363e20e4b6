"""One-line calls for the notebooks. Each figure function returns the figure (shown inline) and
saves it under ``<out_dir>/figures/`` through ``rundir.save_figure``."""
from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import torch

from . import config as cfgmod
from . import rundir
from .config import Config
from .errors import ConfigError
from .train import pretrain
from .views import modality
from .viz import plots

_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def _public(ns: dict) -> dict:
    """The parameters in a notebook namespace: public names that are not modules, functions or IPython's."""
    return {k: v for k, v in ns.items() if not k.startswith("_") and k not in _IPYTHON_NAMES
            and not isinstance(v, (types.ModuleType, types.FunctionType, type))}


def config_from_namespace(ns: dict) -> Config:
    """The Config from a notebook's globals (its parameters cell plus papermill's injected cell).

    Any other public name fails loudly, listing the known fields: papermill only warns about a
    parameter the notebook does not declare, so a typo like ``-p epoch 3`` would otherwise be ignored."""
    params = _public(ns)
    unknown = sorted(set(params) - set(cfgmod.field_names()))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown}; known parameters (config fields): "
                          f"{', '.join(cfgmod.field_names())}")
    cfg = cfgmod.resolve(cfgmod.make(**params))
    chosen = "" if params.get("preset", "auto") != "auto" else f" (preset='auto' chose {cfg.preset!r}: " \
        f"{'CUDA is available' if cfg.device.startswith('cuda') else 'no CUDA, so the CPU-sized preset'})"
    print(f"overlay={cfg.overlay} views={cfg.views} preset={cfg.preset}{chosen}\n"
          f"encoder={cfg.encoder} epochs={cfg.epochs} batch_size={cfg.batch_size} subset={cfg.subset} "
          f"budget={cfg.budget} loss={cfg.loss} temperature={cfg.temperature} supervise={cfg.supervise} "
          f"device={cfg.device}\nout_dir={cfg.out_dir}")
    return cfg


def _save(fig, cfg: Config, name: str):
    rundir.save_figure(fig, Path(cfg.out_dir) / "figures" / f"{name}.png")
    return fig


def run(cfg: Config) -> dict:
    """Pretrain (resuming if out_dir holds a checkpoint) and probe both labels; a run that had finished
    before says so, and where its metrics are, instead of passing for a new one."""
    path = Path(cfg.out_dir) / "metrics.json"
    before = path.stat().st_mtime_ns if path.exists() else None
    metrics = pretrain(cfg)
    if before is not None and path.exists() and path.stat().st_mtime_ns == before:
        print(f"the run had finished before ({metrics.get('epochs')} epochs): nothing was trained or "
              f"written; its metrics are in {path}")
    return metrics


def example_inputs(cfg: Config, n: int = 16):
    # the run's own data (batch_size=1: nothing is trained here, so any batch fits)
    data = modality.load(dataclasses.replace(cfg, device="cpu", batch_size=1), torch.device("cpu"))
    if data.modality.audio:
        fig = plots.spectrograms(data.test, n)
    else:
        t = data.test
        fig = plots.gallery(t.images[:n], t.labels[:n], t.alt_labels[:n], cfg.overlay, rows=2, cols=n // 2,
                            class_names=data.class_names)
    return _save(fig, cfg, "inputs")


def figure(cfg: Config, name: str):
    """One of the figures the run wrote into ``<out_dir>/figures/`` (loss_curves, views, probes, embedding),
    shown inline."""
    from IPython.display import Image

    path = Path(cfg.out_dir) / "figures" / f"{name}.png"
    if not path.exists():  # left out by the run (a test set too small for the map), which said why
        print(f"no {path}: the run did not draw it (its output above says why)")
        return None
    return Image(filename=str(path))


def metrics_table(metrics: dict):
    import pandas as pd

    rows = [(k, metrics[f"probe_{k}"], metrics.get(f"knn_{k}"), metrics.get(f"map_knn_{k}"),
             metrics.get(f"{k}_destroyed"), metrics[f"chance_{k}"])
            for k in ("main", "alt", "coarse") if f"probe_{k}" in metrics]
    df = pd.DataFrame(rows, columns=["label", "linear probe", "kNN", "kNN in the map", "views destroying it",
                                     "chance"]).set_index("label")
    print(f"device {metrics['device']}, pretraining {metrics['train_s']:.0f} s, "
          f"probes {metrics['probe_s']:.0f} s, wall {metrics['wall_s']:.0f} s")
    return df.astype(float).round(3).fillna("–")  # "–": a label the run does not have


# Notebook-specific parameters that are not config fields.
VIEWS_PARAMETERS = ("run_dir", "index", "n_views", "runs_root")
REPORT_PARAMETERS = ("runs_dir", "launch", "overlays", "views_list", "seeds")
MAPS_PARAMETERS = ("run_dirs", "label", "select_x", "select_y", "runs_root")


def check_parameters(ns: dict, extra: tuple[str, ...]) -> dict:
    """For views/report: every public name must be a config field or one of ``extra``."""
    params = _public(ns)
    known = set(cfgmod.field_names()) | set(extra)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown}; known parameters: {', '.join(sorted(known))}")
    # values given (None = "not set": the run's or the preset's) are checked as the pretraining notebook's
    cfgmod.make(**{k: v for k, v in params.items() if k in cfgmod.field_names() and v is not None})
    return params
