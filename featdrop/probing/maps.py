"""Embedding maps in JupyterLab (``notebooks/maps.ipynb``): pick runs, see their maps side by side, switch
the colouring between the class and the overlay, and select a region of a map to see its images.

Each finished run keeps its map in ``figures/embedding.npz`` (the 2-D points, the test items they are and
both labels); the images of a selection come from the run's own test split, loaded without a trainer.
``figure()`` draws the same picture statically (papermill, export).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import config as cfgmod
from ..data import records
from ..data.images import Source, class_names
from ..errors import DataNotFoundError
from ..train import checkpoint
from ..views import modality
from ..viz import embedding, plots


def find_maps(root: str | Path = "runs") -> list[str]:
    """Run directories under ``root`` that have an embedding map."""
    return sorted(str(p.parent.parent) for p in cfgmod.project_path(root).glob("**/figures/embedding.npz"))


class MapRun:
    """One run's map: points, items and labels, its class names, and (on demand) its test images."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        saved = np.load(Path(run_dir) / "figures" / "embedding.npz")
        self.points, self.items = saved["points"], saved["items"]
        self.labels = {k: saved[f"labels_{k}"] for k in ("main", "alt") if f"labels_{k}" in saved}
        self.cfg = checkpoint.run_config(run_dir, device="cpu", progress=False)
        record = records.get(self.cfg.overlay)
        main = class_names(Source.of(self.cfg)) if record.modality == "image" else record.main_names
        self.names = {"main": main, "alt": record.alt_class_names(self.cfg.noise_classes)}
        self._images = None

    @property
    def title(self) -> str:
        c = self.cfg
        return f"{c.overlay} (opacity {c.overlay_opacity:g}), {c.views} views, seed {c.seed}"

    def images(self, rows: np.ndarray) -> torch.Tensor:
        """The test images of map rows ``rows`` (the run's own test split, overlays drawn as in the run)."""
        if self._images is None:
            self._images = modality.load(self.cfg, torch.device("cpu")).test.images
        return self._images[torch.as_tensor(self.items[rows])]

    def inside(self, box) -> np.ndarray:
        """Rows of the points in ``box`` = ((x0, x1), (y0, y1)), as fractions of the map's extent."""
        lo, hi = self.points.min(0), self.points.max(0)
        rel = (self.points - lo) / np.maximum(hi - lo, 1e-9)
        (x0, x1), (y0, y1) = box
        return np.nonzero((rel[:, 0] >= x0) & (rel[:, 0] <= x1) & (rel[:, 1] >= y0) & (rel[:, 1] <= y1))[0]


class MapExplorer:
    def __init__(self, run_dirs=None, label: str = "main", box=((0.0, 0.25), (0.0, 0.25)), runs_root="runs"):
        run_dirs = [run_dirs] if isinstance(run_dirs, str) else list(run_dirs or find_maps(runs_root)[:2])
        if not run_dirs:
            raise DataNotFoundError(f"no run with an embedding map (figures/embedding.npz) under "
                                    f"{runs_root!r}: train one first (featdrop train ...) or pass run_dirs")
        self.runs = [MapRun(str(cfgmod.project_path(d))) for d in run_dirs]
        self.label, self.box, self.runs_root = label, box, runs_root

    def figure(self, label: str | None = None, box=None, n_images: int = 16):
        """The maps side by side coloured by ``label`` (main | alt), the selection ``box`` outlined, and
        below them up to ``n_images`` images of the first run's points inside the box."""
        label, box = label or self.label, box or self.box
        fig = plt.figure(figsize=(5.2 * len(self.runs), 7.2))
        grid = fig.add_gridspec(2, len(self.runs), height_ratios=(3, 1.3))
        for j, run in enumerate(self.runs):
            ax = fig.add_subplot(grid[0, j])
            key = label if label in run.labels else "main"
            y, names = run.labels[key], run.names[key]
            for c in range(len(names)):
                sel = y == c
                ax.scatter(run.points[sel, 0], run.points[sel, 1], s=3, label=names[c], linewidths=0)
            lo, hi = run.points.min(0), run.points.max(0)
            (x0, x1), (y0, y1) = box
            span = hi - lo
            ax.add_patch(plt.Rectangle((lo[0] + x0 * span[0], lo[1] + y0 * span[1]), (x1 - x0) * span[0],
                                       (y1 - y0) * span[1], fill=False, lw=1.5))
            acc = embedding.neighbourhood_accuracy(run.points, y)
            ax.set_title(f"{run.title}\ncoloured by {'class' if key == 'main' else 'overlay'}: "
                         f"{embedding.NEIGHBOURS}-NN accuracy in the map {acc:.3f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=5, markerscale=3, loc="upper right", ncol=2)
        first = self.runs[0]
        rows = first.inside(box)[:n_images]
        ax = fig.add_subplot(grid[1, :])
        ax.axis("off")
        ax.set_title(f"{len(first.inside(box))} points of the first map in the box; {len(rows)} shown "
                     f"(class / overlay)", fontsize=8)
        for i, (img, r) in enumerate(zip(first.images(rows), rows)):
            inset = ax.inset_axes((i / max(n_images, 1), 0.0, 1 / max(n_images, 1) * 0.92, 0.8))
            inset.imshow(plots._to_hwc(img), interpolation="nearest")
            alt = first.names["alt"][int(first.labels["alt"][r])] if "alt" in first.labels else "–"
            inset.set_title(f"{first.names['main'][int(first.labels['main'][r])]}\n{alt}", fontsize=6)
            inset.axis("off")
        return fig

    def widget(self):
        import ipywidgets as w

        options = sorted(set(find_maps(self.runs_root)) | {r.run_dir for r in self.runs})
        runs = w.SelectMultiple(options=options, value=[r.run_dir for r in self.runs], description="runs",
                                rows=4)
        label = w.ToggleButtons(options=[("class", "main"), ("overlay", "alt")], value=self.label,
                                description="colour")
        xs = w.FloatRangeSlider(value=self.box[0], min=0, max=1, step=0.01, description="select x")
        ys = w.FloatRangeSlider(value=self.box[1], min=0, max=1, step=0.01, description="select y")
        out = w.Output()

        def redraw(*_, first: bool = False):
            if runs.value:
                chosen = list(runs.value)
                if chosen != [r.run_dir for r in self.runs]:
                    self.runs = [MapRun(d) for d in chosen]
            fig = self.figure(label.value, (xs.value, ys.value))
            plots.show_in(out, fig, first)

        for control in (runs, label, xs, ys):
            control.observe(redraw, names="value")
        redraw(first=True)
        return w.VBox([w.HBox([runs, label]), w.HBox([xs, ys]), out])
