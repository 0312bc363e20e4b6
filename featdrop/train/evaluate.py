"""The final evaluation: probes on every label from the final encoder (no checkpoint is ever selected by
test accuracy). ``fast`` (the default): L-BFGS logistic regression and kNN on clean pooled features of the
whole training and test split; ``reference``: the paper's SGD probe on pre-pool features, trained on the
method's own views. The coarse label is always probed the fast way (a cheap 2-class probe). With label
oracles, also the label destruction of one view of every test item (``destruction``)."""
from __future__ import annotations

import time

import torch

from .. import config as cfgmod
from .. import probe as probemod
from ..errors import ConfigError
from .monitor import label_destruction, one_view


def probe_features(trainer):
    """The fast protocol's inputs: clean pooled features of the whole training and test split, and the
    labelsets (name, train labels, test labels, classes): main, alt and (CIFAR-10) coarse."""
    d = trainer.data
    split = d.train.draw(0)
    labelsets = [("main", split.labels, d.test.labels, d.num_classes),
                 ("alt", split.alt_labels, d.test.alt_labels, d.num_alt_classes)]
    if getattr(split, "coarse_labels", None) is not None:
        labelsets.append(("coarse", split.coarse_labels, d.test.coarse_labels, 2))
    return trainer.clean_features(split.images), trainer.clean_features(d.test.images), labelsets


def evaluate(trainer, probe: str | None = None, probe_epochs: int | None = None) -> dict:
    """Probe accuracies (and, fast protocol, kNN) for every label. ``probe``/``probe_epochs`` default to
    the run's own."""
    c, d = trainer.cfg, trainer.data
    protocol, epochs = probe or c.probe, probe_epochs or c.probe_epochs
    if protocol not in cfgmod.PROBES:
        raise ConfigError(f"probe {protocol!r} is invalid: allowed one of {', '.join(cfgmod.PROBES)}")
    t0 = time.perf_counter()
    ftr, fte, labelsets = probe_features(trainer)
    if protocol == "fast":
        metrics = probemod.fast_metrics(ftr, fte, labelsets, c.knn_k)
    else:
        split, clean = d.train.draw(0), d.modality.clean
        metrics = probemod.fast_metrics(ftr, fte, labelsets[2:], c.knn_k)  # coarse
        for name, ytr, yte, k in labelsets[:2]:
            if k < 2:  # no alternate label (overlay "none")
                metrics[f"probe_{name}"] = metrics[f"chance_{name}"] = None
                continue
            g = torch.Generator(device=trainer.device).manual_seed(c.seed)
            metrics[f"probe_{name}"] = probemod.reference_probe(
                trainer.encoder, _probe_views(trainer, split, g), len(ytr), ytr,
                lambda sl: trainer.cl(clean(d.test.images[sl])), len(yte), yte, k, epochs=epochs,
                generator=g)
            metrics[f"chance_{name}"] = probemod.chance(yte, k)
    metrics["probe_s"] = time.perf_counter() - t0
    return metrics


@torch.no_grad()
def destruction(trainer, chunk: int = 1024) -> dict:
    """alt_destroyed / main_destroyed over the whole test split, one seeded view of the run's own kind per
    item, read by the run's oracles; and each oracle's clean test accuracy."""
    d = trainer.data
    g = torch.Generator(device=trainer.device).manual_seed(trainer.cfg.seed * 100_003 + 90_000)
    raw = d.test.images
    view = torch.cat([one_view(trainer, raw[i:i + chunk], g)[0] for i in range(0, len(raw), chunk)])
    clean = trainer.cl(d.modality.clean(raw))
    out = label_destruction(trainer.oracles, clean, trainer.cl(view), {"main": d.test.labels,
                                                                       "alt": d.test.alt_labels})
    return {**out, **{f"oracle_accuracy_{name}": o.accuracy for name, o in trainer.oracles.items()}}


def _probe_views(trainer, split, g):
    """The reference probe's training inputs: view 1 of the run's own views of the items ``idx``."""
    def inputs(idx):
        with torch.no_grad():
            x1, _ = trainer.views(split.images[idx], g, grad=False)
        return trainer.cl(x1)
    return inputs
