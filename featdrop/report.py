"""Compare runs: overlay × views → main and alternate probe accuracy, mean ± sd over seeds.

``launch_grid`` runs the missing (overlay, views, seed) cells through papermill, each as
``<runs_dir>/<overlay>-<views>-seed<seed>/`` with its executed ``pretrain.ipynb`` beside its
metrics; ``collect`` reads every ``metrics.json`` under a directory.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT / "notebooks" / "pretrain.ipynb"


def run_name(overlay: str, views: str, seed: int) -> str:
    return f"{overlay}-{views}-seed{seed}"


def launch_grid(runs_dir: str, overlays, views, seeds, **params) -> list[str]:
    """Execute pretrain.ipynb for every missing grid cell; returns the run directories launched."""
    import papermill

    launched = []
    for overlay, view, seed in itertools.product(overlays, views, seeds):
        out = Path(runs_dir) / run_name(overlay, view, seed)
        if (out / "metrics.json").exists():
            continue
        out.mkdir(parents=True, exist_ok=True)
        print(f"launching {out} ...", flush=True)
        papermill.execute_notebook(str(PRETRAIN), str(out / "pretrain.ipynb"), kernel_name="python3",
                                   parameters=dict(params, overlay=overlay, views=view, seed=seed, out_dir=str(out)),
                                   cwd=str(ROOT), progress_bar=False)
        launched.append(str(out))
    return launched


def collect(runs_dir: str):
    """One row per finished run (a directory holding metrics.json and config.json)."""
    import pandas as pd

    rows = []
    for m in sorted(Path(runs_dir).glob("**/metrics.json")):
        metrics = json.loads(m.read_text())
        cfg = json.loads((m.parent / "config.json").read_text()) if (m.parent / "config.json").exists() else {}
        rows.append({"run": str(m.parent), "overlay": cfg.get("overlay", metrics.get("overlay")),
                     "views": cfg.get("views", metrics.get("views")), "seed": cfg.get("seed", metrics.get("seed")),
                     "preset": cfg.get("preset"), "encoder": cfg.get("encoder"), "epochs": cfg.get("epochs"),
                     **{k: metrics.get(k) for k in ("probe_main", "probe_alt", "knn_main", "knn_alt",
                                                    "chance_main", "chance_alt", "wall_s", "device")}})
    if not rows:
        raise FileNotFoundError(f"no runs (metrics.json) under {runs_dir!r}: launch some first "
                                f"(report.ipynb with launch=True, or papermill notebooks/pretrain.ipynb)")
    return pd.DataFrame(rows)


def summary(df):
    """overlay × views → 'mean ± sd (n)' of the main and alternate probe accuracy."""
    def fmt(s):
        return f"{s.mean():.3f} ± {s.std(ddof=1):.3f} (n={len(s)})" if len(s) > 1 else f"{s.mean():.3f} (n=1)"

    g = df.groupby(["overlay", "views"])
    return g.agg(main=("probe_main", fmt), alternate=("probe_alt", fmt), knn_main=("knn_main", fmt),
                 knn_alt=("knn_alt", fmt), chance_alt=("chance_alt", "mean"))
