"""A run's figures, written into ``<out_dir>/figures/`` when the run finishes (from the command line, a grid
or a notebook alike): example inputs with both labels, loss curves with the game's health, views with their
perturbations, probe bars, and the embedding map (with its points in ``embedding.npz``)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .. import rundir
from ..data import records
from ..viz import embedding, plots

FIGURES = ("inputs", "loss_curves", "views", "probes", "embedding")


def draw_views(trainer, raw: torch.Tensor, k: int, g: torch.Generator, views: str | None = None,
               budget: float | None = None):
    """k views of raw (B, ...) in the modality's base space, their perturbations δ (viewmaker views;
    else None) and their encoder inputs. ``views``/``budget`` default to the run's own; the trained
    viewmaker is never changed (the budget is passed to this call only)."""
    m, vm = trainer.data.modality, trainer.viewmaker
    base = m.base(raw)
    with torch.no_grad():
        if (views or trainer.cfg.views) == "viewmaker" and vm is not None:
            deltas = [vm.perturbation(base, g, budget=budget) for _ in range(k)]
            outs = [base + d for d in deltas]
        else:
            outs, deltas = [m.expert_base(raw, g) for _ in range(k)], None
        return outs, deltas, [m.to_encoder(v) for v in outs]


def inputs(trainer, n: int = 16):
    t, cfg = trainer.data.test, trainer.cfg
    if trainer.data.modality.audio:
        return plots.spectrograms(t, n)
    return plots.gallery(t.images[:n], t.labels[:n], t.alt_labels[:n], cfg.overlay, rows=2, cols=n // 2,
                         class_names=trainer.data.class_names)


def views(trainer, n: int = 4, k: int = 3, seed: int = 0):
    """Clean test examples, k views each; for the viewmaker also each view's perturbation δ."""
    m, raw = trainer.data.modality, trainer.data.test.images[:n]
    outs, deltas, _ = draw_views(trainer, raw, k, torch.Generator(device=raw.device).manual_seed(seed))
    what = f"viewmaker views (budget ε {trainer.cfg.budget:g})" if deltas is not None else "expert views"
    return plots.view_grid(m.base(raw), outs, deltas, spectrogram=m.audio, title=what)


def probes(trainer, metrics: dict):
    c = trainer.cfg
    objective = c.loss + (f", supervised on {c.supervise}" if c.supervise else "")
    return plots.probe_bars(metrics, f"{c.overlay} / {c.views} / {objective} ({c.preset})")


def embedding_map(trainer):
    """The run's map: frozen features of a fixed, seeded set of test items; returns a dict of the figure,
    features, points, items, labels, class names and scores."""
    c, t = trainer.cfg, trainer.data.test
    idx = embedding.items(len(t.labels), c.seed)
    features = trainer.clean_features(t.images[idx.to(t.images.device)])
    points = embedding.map_2d(features, c.seed)
    record = records.get(c.overlay)
    labels = {"main": t.labels[idx].cpu().numpy()}
    names = {"main": trainer.data.class_names or record.main_names,
             "alt": record.alt_class_names(c.noise_classes)}
    if record.has_alt_label():
        labels["alt"] = t.alt_labels[idx].cpu().numpy()
    title = f"{c.overlay} / {c.views} / {c.loss}, seed {c.seed}: t-SNE of {len(idx)} test images' features"
    return dict(figure=embedding.figure(points, labels, names, title), features=features.cpu(), points=points,
                items=idx.numpy(), labels=labels, names=names, scores=embedding.scores(points, labels))


def write(trainer, metrics: dict, say=print) -> dict | None:
    """Every figure of a finished run into ``<out_dir>/figures/``; returns the map (``embedding_map``),
    whose neighbourhood scores go into metrics.json (``map_knn_main``, ``map_knn_alt``), or None when there
    is none. A figure never costs the run its metrics: a test set too small for the map skips the map with
    a line (``say``), and a figure that fails is named in a warning and left out."""
    out = Path(trainer.cfg.out_dir) / "figures"
    for name, draw in (("inputs", lambda: inputs(trainer)), ("views", lambda: views(trainer)),
                       ("loss_curves", lambda: plots.loss_curves(trainer.history, {
                           "main": metrics.get("chance_main"), "alt": metrics.get("chance_alt")})),
                       ("probes", lambda: probes(trainer, metrics))):
        _guarded(name, lambda: rundir.save_figure(draw(), out / f"{name}.png"))
    skipped = embedding.too_few(len(trainer.data.test.labels))
    if skipped:
        say(skipped)
        return None
    return _guarded("embedding", lambda: _write_map(trainer, out))


def _write_map(trainer, out: Path) -> dict:
    found = embedding_map(trainer)
    rundir.save_figure(found["figure"], out / "embedding.png")
    with rundir.atomic_path(out / "embedding.npz") as tmp:
        np.savez_compressed(tmp, points=found["points"], items=found["items"],
                            **{f"labels_{k}": v for k, v in found["labels"].items()})
    return found


def _guarded(name: str, draw):
    """draw(), or None with a warning naming the figure when it fails (the metrics are written anyway)."""
    try:
        return draw()
    except Exception as exc:  # a figure is never worth the run's metrics
        warnings.warn(f"figure {name!r} failed ({type(exc).__name__}: {exc}); left out, the metrics are "
                      f"written without it", stacklevel=2)
        return None
