"""Embedding maps: a 2-D t-SNE map of frozen features, drawn twice side by side, coloured by the main label
and by the overlay's label, each panel with one number that says how much the map's neighbourhoods follow
that label: the leave-one-out 10-nearest-neighbour accuracy in the 2-D map. Suppression shows as a map whose
neighbourhoods follow the overlay and not the class.

The map is openTSNE's (Poličar et al.): on a 2-core CPU it maps 2,000 points about 1.5x faster than
scikit-learn's Barnes-Hut t-SNE (measured side by side), and it adds 3.5 MB to scikit-learn, which both
need; UMAP would add numba and llvmlite (about 100 MB) and a first-call compile. Features are reduced to 50
principal components first, and the optimisation is shortened (125 + 250 iterations), which keeps a map of
2,000 points to a few seconds.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

MAP_ITEMS = 2000        # test items in a run's map: a fixed, seeded random subset
NEIGHBOURS = 10         # k of the map's neighbourhood accuracy
# the fewest items a map is drawn for: a perplexity of (n − 1)/3 ≥ NEIGHBOURS, so the map's neighbourhoods
# are as wide as its score's (with one item t-SNE fails: perplexity 0)
MAP_MIN = 3 * NEIGHBOURS + 1


def too_few(n: int, field: str = "test_subset") -> str | None:
    """Why there is no map of ``n`` items (a line to print), or None when there are enough."""
    if n >= MAP_MIN:
        return None
    return (f"embedding map skipped: {n} test item(s), and a map needs at least {MAP_MIN} (raise {field}); "
            f"the other figures and the metrics are written")


def items(n_test: int, seed: int, n: int = MAP_ITEMS) -> torch.Tensor:
    """The fixed, seeded random test items a map shows (all of them when there are fewer)."""
    if n_test <= n:
        return torch.arange(n_test)
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(seed * 7_919 + 3))[:n]


def map_2d(features: torch.Tensor, seed: int = 0) -> np.ndarray:
    """(N, D) features → (N, 2) t-SNE map (openTSNE; PCA to 50 dimensions first, PCA initialisation)."""
    import openTSNE

    x = features.detach().float().cpu().numpy()
    x = x - x.mean(0)
    if x.shape[1] > 50:
        x = x @ np.linalg.svd(x, full_matrices=False)[2][:50].T
    tsne = openTSNE.TSNE(n_components=2, perplexity=min(30, (len(x) - 1) / 3), initialization="pca",
                         early_exaggeration_iter=125, n_iter=250, random_state=seed,
                         n_jobs=torch.get_num_threads())
    return np.asarray(tsne.fit(x), dtype=np.float32)


def neighbourhood_accuracy(points, labels, k: int = NEIGHBOURS) -> float:
    """How often the majority label of a point's k nearest other points (in the map) is its own label:
    near 1 when the map's neighbourhoods follow the label, near chance when they ignore it."""
    p = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels)).long()
    d = torch.cdist(p, p).fill_diagonal_(float("inf"))                   # (N, N), self excluded
    near = d.topk(min(k, len(p) - 1), largest=False).indices               # (N, k)
    votes = torch.zeros(len(p), int(y.max()) + 1).scatter_add_(1, y[near], torch.ones(near.shape))
    return (votes.argmax(1) == y).float().mean().item()


def figure(points, labels: dict, names: dict, title: str = ""):
    """The map twice side by side, one panel per label in ``labels`` ({"main": (N,), "alt": (N,)}),
    coloured with the class names in ``names``, each titled with its neighbourhood accuracy and chance."""
    panels = [k for k in ("main", "alt") if k in labels]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.2), squeeze=False)
    for ax, key in zip(axes[0], panels):
        y = np.asarray(labels[key])
        classes = names[key]
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for c in range(len(classes)):
            sel = y == c
            ax.scatter(points[sel, 0], points[sel, 1], s=4, color=cmap(c % cmap.N), label=classes[c],
                       alpha=0.8, linewidths=0)
        acc = neighbourhood_accuracy(points, y)
        chance = np.bincount(y, minlength=len(classes)).max() / len(y)
        what = "class (main label)" if key == "main" else "overlay (alternate label)"
        ax.set_title(f"coloured by {what}\n{NEIGHBOURS}-NN accuracy in the map {acc:.3f} "
                     f"(chance {chance:.3f})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=6, markerscale=3, loc="upper left", bbox_to_anchor=(1, 1), frameon=False,
                  ncol=1 if len(classes) <= 13 else 2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def scores(points, labels: dict) -> dict:
    """{label: neighbourhood accuracy} for every label in ``labels``: the maps' numbers, for metrics."""
    return {key: neighbourhood_accuracy(points, y) for key, y in labels.items()}
