"""The per-epoch monitor: kNN accuracy on both labels and the health of the contrastive game (is the task
still hard, and what do the views drop?), on fixed, seeded random subsets of train and test.

- ``positive_accuracy``: the fraction of the 2B anchors whose most similar other embedding is their
  positive. Near 1 the instance-discrimination task is solved and NT-Xent's gradients vanish (the
  collapse seen on the GPU, issue 11).
- ``dropped_fraction``: feature dropout, measured (Tamkin et al., "Feature Dropout", NeurIPS 2023):
  of the items whose clean input a probe labels correctly, the fraction whose view it gets wrong.
- ``overlay_budget_share``: the share of a viewmaker perturbation's L1 mass Σ|δ| that falls on the
  overlay's pixels; the overlay's share of the image's area is its chance level.
- ``label_destruction``: the same fraction as ``dropped_fraction``, read by label oracles (small supervised
  readers independent of the encoder, ``featdrop.oracles``) instead of the encoder's own probe: of the items
  whose clean input the oracle reads correctly, the fraction whose view it reads wrong (``alt_destroyed``,
  ``main_destroyed``). A weak encoder's probe also misses views that keep the label; an oracle does not.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .. import probe

MONITOR_TRAIN, MONITOR_TEST = 5000, 1000  # kNN monitor / health sizes (per epoch, cheap)
# the health metrics' clean-feature probes: items, L-BFGS iterations
# the health metrics' clean-feature probes: items, and L-BFGS iterations from zeros (the first epoch) and from
# the previous epoch's fit (every later epoch: the features move a little, so 30 iterations suffice)
HEALTH_PROBE_N, HEALTH_PROBE_ITERS, HEALTH_PROBE_WARM_ITERS = 2000, 100, 30
ORACLE_ITEMS = 500  # of the monitor's test items, read by the oracles every epoch (metrics.json: all of them)


@torch.no_grad()
def positive_accuracy(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """z1, z2 (B, D) → 0-d tensor: over the 2B anchors, how often the nearest (cosine) of the other
    2B − 1 embeddings is the anchor's positive. Stays on the device (no host sync)."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)          # (2B, D)
    n = z1.shape[0]
    sim = (z @ z.t()).fill_diagonal_(float("-inf"))               # self excluded
    pos = torch.arange(2 * n, device=z.device).roll(n)            # i ↔ i ± B
    return (sim.argmax(1) == pos).float().mean()


def dropped_fraction(clean_pred: torch.Tensor, view_pred: torch.Tensor, y: torch.Tensor) -> float:
    """Of the items whose clean prediction is right, the fraction whose view's prediction is wrong
    (NaN when the probe gets no clean item right)."""
    clean_ok = clean_pred == y
    n = int(clean_ok.sum())
    return float(((view_pred != y) & clean_ok).sum()) / n if n else float("nan")


def overlay_budget_share(delta: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    """delta (N, C, H, W), masks bool (N, H, W) → (Σ|δ| on the mask / Σ|δ|, the mask's share of the
    pixels). The first equals the second for a perturbation spread evenly over the image."""
    mass = delta.float().abs().sum(1)                              # (N, H, W): L1 mass per pixel
    m = masks.to(mass.dtype)
    return float((mass * m).sum() / mass.sum().clamp_min(1e-12)), float(m.mean())


def label_destruction(oracles: dict, clean, view, labels: dict, clean_reads: dict | None = None) -> dict:
    """{label}_destroyed for each oracle: of the items whose ``clean`` encoder input the oracle reads as
    ``labels[label]``, the fraction whose ``view`` it reads otherwise. ``clean_reads``: the oracles' readings
    of ``clean``, when already known (the monitor's fixed test items)."""
    out = {}
    for name, oracle in oracles.items():
        before = clean_reads[name] if clean_reads is not None else oracle.read(clean)
        out[f"{name}_destroyed"] = dropped_fraction(before, oracle.read(view), labels[name])
    return out


def monitor_indices(n: int, k: int, seed: int, stream: int) -> torch.Tensor:
    """A fixed, seeded random subset of k of n items (data sets on disk are in class order, so the
    first k would all share a class)."""
    if n <= k:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7_919 + stream))[:k]


def one_view(trainer, raw, g):
    """One view per item of the run's own kind: (encoder input, the viewmaker's δ or None)."""
    m, vm = trainer.data.modality, trainer.viewmaker
    r1 = m.pair(raw)[0]
    if vm is None:
        return m.expert(r1, g), None
    x = m.base(r1)
    with torch.no_grad(), trainer.autocast():
        delta = vm.perturbation(trainer.cl(x), noise=vm.draw_noise(x, g)).float()
    view = x + delta
    if vm.clamp is not None:
        view = view.clamp(*vm.clamp)
    return m.to_encoder(view), delta


class Monitor:
    """``monitor(split, epoch)`` → the epoch's kNN accuracies and health metrics, for ``history.jsonl``."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.indices: tuple[torch.Tensor, torch.Tensor] | None = None  # drawn at the first call
        self.clean_reads: dict | None = None  # the oracles' readings of the clean test items (fixed)
        self.probes: dict = {}  # label → (w, b) of the last clean-feature probe: the next epoch's warm start

    def __call__(self, split, epoch: int) -> dict:
        tr = self.trainer
        c, d = tr.cfg, tr.data
        if self.indices is None:
            self.indices = (monitor_indices(len(split.labels), MONITOR_TRAIN, c.seed, 1).to(tr.device),
                            monitor_indices(len(d.test.labels), MONITOR_TEST, c.seed, 2).to(tr.device))
        itr, ite = self.indices
        raw_te = d.test.images[ite]
        ftr, fte = tr.clean_features(split.images[itr]), tr.clean_features(raw_te)
        labelsets = [(name, ytr[itr], yte[ite], k) for name, ytr, yte, k in (
            ("main", split.labels, d.test.labels, d.num_classes),
            ("alt", split.alt_labels, d.test.alt_labels, d.num_alt_classes))]
        out = {f"knn_{name}": probe.knn_accuracy(ftr, ytr, fte, yte, k, c.knn_k) if k > 1 else None
               for name, ytr, yte, k in labelsets}  # None: a label with one class (overlay "none")
        # the health metrics' own cost, beside the kNN monitor's (issue 11: < 10 % of an epoch)
        t0 = time.perf_counter()
        # feature dropout: one draw of the run's own views of the monitor's test images
        g = torch.Generator(device=tr.device).manual_seed(c.seed * 100_003 + 50_000 + epoch)
        x, delta = one_view(tr, raw_te, g)
        fview = probe.extract(tr.encoder, lambda sl: tr.cl(x[sl]), len(x))
        for name, ytr, yte, k in labelsets:
            if k > 1:
                n = HEALTH_PROBE_N  # the monitor's items are a random subset, so its head is one too
                warm = self.probes.get(name)
                clean_probe = probe.LinearProbe(ftr[:n], ytr[:n], k, init=warm,
                                                iters=HEALTH_PROBE_WARM_ITERS if warm else HEALTH_PROBE_ITERS)
                self.probes[name] = (clean_probe.w, clean_probe.b)
                out[f"{name}_dropped"] = dropped_fraction(clean_probe.logits(fte).argmax(1),
                                                          clean_probe.logits(fview).argmax(1), yte)
        if tr.oracles:  # the same views of the first ORACLE_ITEMS items, read by the label oracles
            few = ite[:ORACLE_ITEMS]
            labels = {"main": d.test.labels[few], "alt": d.test.alt_labels[few]}
            if self.clean_reads is None:
                clean = tr.cl(d.modality.clean(d.test.images[few]))
                self.clean_reads = {name: o.read(clean) for name, o in tr.oracles.items()}
            out.update(label_destruction(tr.oracles, None, x[:ORACLE_ITEMS], labels, self.clean_reads))
        masks = getattr(d.test, "masks", None)
        if delta is not None and masks is not None and c.overlay != "none" and c.overlay_opacity > 0:
            out["overlay_budget_share"], out["overlay_area_share"] = overlay_budget_share(delta, masks[ite])
        out["health_s"] = time.perf_counter() - t0
        return out
