"""Summarise the coarse-to-fine study (issue 13): fine-label probes of coarse-supervised runs, mean ± sd.

Run the two grids first (quick preset, expert views, plain CIFAR-10, 3 seeds):

    featdrop grid --runs-dir runs/study13 overlay=none views=expert preset=quick \
        supervise=coarse loss=supcon,spread,ae seed=0,1,2
    featdrop grid --runs-dir runs/study13-simclr overlay=none views=expert preset=quick \
        loss=simclr seed=0,1,2

then ``python scripts/study_coarse.py runs/study13 runs/study13-simclr``. Thanos (both backbones) is the
fast probe on the concatenated features of each seed's spread and ae runs (``featdrop reprobe --concat``,
written to ``<spread run>/probes/concat-fast.json``; an existing file is reused).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from featdrop import rundir
from featdrop.lab.tables import mean_sd as stat
from featdrop.probing import reprobe

ANCHOR = {"supcon": 51.8, "spread": 77.1, "ae": 71.7, "thanos": 79.1}  # Thanos README, fine-label transfer, %
NAMES = {"supcon": "SupCon (`loss=supcon`)", "spread": "SupCon + cNCE (`loss=spread`, α = 0.5)",
         "ae": "class-conditional AE (`loss=ae`)", "thanos": "Thanos (spread + ae, concatenated, `--concat`)",
         "simclr": "SimCLR, self-supervised (`loss=simclr`)"}


def main(*runs_dirs: str) -> None:
    rows: dict[str, list[dict]] = {}
    by_seed: dict[tuple[str, int], Path] = {}
    for runs_dir in runs_dirs or ("runs/study13", "runs/study13-simclr"):
        for m in sorted(Path(runs_dir).glob("*/metrics.json")):
            cfg = json.loads((m.parent / "config.json").read_text())
            rows.setdefault(cfg["loss"], []).append(json.loads(m.read_text()))
            by_seed[cfg["loss"], cfg["seed"]] = m.parent
    for seed in sorted({s for _, s in by_seed}):
        if ("spread", seed) in by_seed and ("ae", seed) in by_seed:
            first = by_seed["spread", seed]
            cached = first / "probes" / "concat-fast.json"
            result = rundir.read_json(cached) if cached.exists() else \
                reprobe.reprobe([first, by_seed["ae", seed]], concat=True, device="cpu").iloc[0].to_dict()
            rows.setdefault("thanos", []).append(result)
    print("| method | n | fine (main) probe | coarse probe | kNN fine | Thanos README (%) |")
    print("|---|---|---|---|---|---|")
    for loss in ("supcon", "spread", "ae", "thanos", "simclr"):
        items = rows.get(loss, [])
        print(f"| {NAMES[loss]} | {len(items)} | {stat([r['probe_main'] for r in items])} "
              f"| {stat([r['probe_coarse'] for r in items])} "
              f"| {stat([r.get('knn_main') for r in items])} "
              f"| {ANCHOR.get(loss, '–')} |")
    fine = {loss: [r["probe_main"] for r in items] for loss, items in rows.items()}
    print("\nper seed, fine probe:", {k: [round(x, 3) for x in v] for k, v in fine.items()})


if __name__ == "__main__":
    main(*sys.argv[1:])
