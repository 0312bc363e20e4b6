"""Summarise the viewmaker-game study (issue 11): a markdown table and the health curves.

Run the grid first (12 quick CPU runs, shapes overlay):

    featdrop grid --runs-dir runs/study11 views=viewmaker,expert loss=simclr,reference \
        seed=0,1,2 overlay=shapes preset=quick

then ``python scripts/study_game.py runs/study11 docs/study_game.png``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from featdrop import rundir
from featdrop.lab.tables import mean_sd as stat
from featdrop.viz import compare


def main(runs_dir: str = "runs/study11", figure: str = "docs/study_game.png") -> None:
    groups: dict[tuple, list[tuple[dict, dict, list[dict]]]] = {}
    for m in sorted(Path(runs_dir).glob("*/metrics.json")):
        cfg = json.loads((m.parent / "config.json").read_text())
        hist = rundir.read_history(m.parent / "history.jsonl")
        groups.setdefault((cfg["views"], cfg["loss"]), []).append((cfg, json.loads(m.read_text()), hist))

    print("| views | loss | n | probe main | probe alt | probe coarse | kNN main | final pos_acc "
          "| final alt_dropped | final main_dropped | final overlay_budget_share (area share) | final loss "
          "| pretraining s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (views, loss), items in sorted(groups.items()):
        last = [h[-1] for _, _, h in items]
        share = stat([r.get("overlay_budget_share") for r in last])
        area = stat([r.get("overlay_area_share") for r in last])
        print(f"| {views} | {loss} | {len(items)} | {stat([m['probe_main'] for _, m, _ in items])} "
              f"| {stat([m['probe_alt'] for _, m, _ in items])} "
              f"| {stat([m.get('probe_coarse') for _, m, _ in items])} "
              f"| {stat([m['knn_main'] for _, m, _ in items])} | {stat([r.get('pos_acc') for r in last])} "
              f"| {stat([r.get('alt_dropped') for r in last])} "
              f"| {stat([r.get('main_dropped') for r in last])} "
              f"| {share}{f' ({area})' if share != '–' else ''} | {stat([r['loss'] for r in last])} "
              f"| {stat([m['train_s'] for _, m, _ in items])} |")
    fig = compare.health_curves({f"{v} / {loss}": [h for _, _, h in items]
                                 for (v, loss), items in sorted(groups.items())},
                                title="shapes, quick preset: the viewmaker game per epoch "
                                      "(mean over seeds; band: min–max)")
    print(f"wrote {rundir.save_figure(fig, figure)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
