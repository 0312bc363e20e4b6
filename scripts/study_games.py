"""Is the one-pass viewmaker game the same game? (issue 29): the alternating game (the reference) and the
simultaneous one, paired by opacity and seed, on every outcome, with the per-epoch curves side by side.

Run the grid first (quick preset, shapes, viewmaker views, 3 seeds):

    featdrop grid --runs-dir runs/study29-game overlay=shapes preset=quick views=viewmaker \\
        game=alternating,simultaneous overlay_opacity=1.0,0 seed=0,1,2

then ``python scripts/study_games.py runs/study29-game docs/study_games.png``. For every outcome: the mean ±
sd over seeds under each game, and the simultaneous − alternating difference paired by seed with a two-sided
paired t-test (NaN below two pairs). Class suppression is paired within a game: probe(opacity 0) −
probe(opacity 1), same seed.
"""
from __future__ import annotations

import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from featdrop import rundir
from featdrop.lab import tables

OUTCOMES = ["probe_main", "probe_alt", "knn_main", "knn_alt", "suppression_main", "suppression_knn_main",
            "alt_destroyed", "main_destroyed", "final_pos_acc", "final_overlay_budget_share", "images_per_s",
            "wall_s"]
CURVES = [("loss", "loss"), ("knn_main", "kNN class"), ("knn_alt", "kNN shape"), ("pos_acc", "pos_acc"),
          ("alt_destroyed", "views destroying the shape"), ("main_destroyed", "views destroying the class")]
GAMES = ("alternating", "simultaneous")


def load(runs_dir: str) -> tuple[pd.DataFrame, dict]:
    df = tables.collect(runs_dir)
    df["suppression_main"] = tables.suppression_per_run(df, "probe_main")
    df["suppression_knn_main"] = tables.suppression_per_run(df, "knn_main")
    histories = {i: rundir.read_history(f"{run}/history.jsonl") for i, run in df["run"].items()}
    df["final_pos_acc"] = [histories[i][-1].get("pos_acc", np.nan) for i in df.index]
    df["final_overlay_budget_share"] = [histories[i][-1].get("overlay_budget_share", np.nan)
                                        for i in df.index]
    df["images_per_s"] = [np.median([row["images_per_s"] for row in histories[i]]) for i in df.index]
    return df, histories


def paired_table(df: pd.DataFrame) -> str:
    rows = ["| opacity | outcome | alternating | simultaneous | simultaneous − alternating (paired p) | n |",
            "|---|---|---|---|---|---|"]
    for opacity, part in df.groupby("overlay_opacity"):
        for outcome in OUTCOMES:
            if outcome not in part or part[outcome].isna().all() or (opacity == 0 and "suppr" in outcome):
                continue
            by_seed = part.pivot_table(index="seed", columns="game", values=outcome)
            if not set(GAMES) <= set(by_seed):
                continue
            d = (by_seed["simultaneous"] - by_seed["alternating"]).dropna()
            mean, sd, p = tables.paired_stats(d)
            digits = 0 if outcome in ("images_per_s", "wall_s") else 3
            diff = "–" if np.isnan(mean) else (f"{mean:+.{digits}f}"
                                               + ("" if np.isnan(sd) else f" ± {sd:.{digits}f}")
                                               + ("" if np.isnan(p) else f" (p {p:.2g})"))
            rows.append(f"| {opacity:g} | {outcome} | {tables.mean_sd(by_seed['alternating'], digits)} | "
                        f"{tables.mean_sd(by_seed['simultaneous'], digits)} | {diff} | {len(d)} |")
    return "\n".join(rows)


def figure(df: pd.DataFrame, histories: dict, path: str):
    opacities = sorted(df.overlay_opacity.unique(), reverse=True)
    fig, axes = plt.subplots(len(opacities), len(CURVES), figsize=(3.3 * len(CURVES), 3.0 * len(opacities)),
                             squeeze=False)
    for ax_row, opacity in zip(axes, opacities):
        for ax, (key, title) in zip(ax_row, CURVES):
            for game, colour in zip(GAMES, ("C0", "C3")):
                runs = df[(df.overlay_opacity == opacity) & (df.game == game)]
                curves = [[row.get(key, np.nan) for row in histories[i]] for i in runs.index]
                curves = [c for c in curves if not all(v is None or np.isnan(v) for v in c)]
                if not curves:
                    continue
                n = min(map(len, curves))
                values = np.array([[np.nan if v is None else v for v in c[:n]] for c in curves], dtype=float)
                epochs = np.arange(1, n + 1)
                mean, sd = np.nanmean(values, 0), np.nanstd(values, 0)
                ax.plot(epochs, mean, color=colour, label=f"{game} (n={len(curves)})")
                ax.fill_between(epochs, mean - sd, mean + sd, color=colour, alpha=0.2)
            if not ax.lines:  # alt_destroyed at opacity 0: no shape to destroy
                ax.text(0.5, 0.5, "not defined here:\nno visible shape", ha="center", va="center",
                        transform=ax.transAxes, fontsize=9, color="0.4")
                ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{title}, opacity {opacity:g}", fontsize=9)
            ax.set_xlabel("epoch")
        ax_row[0].legend(fontsize=7)
    fig.suptitle("viewmaker views, shapes, quick preset: the alternating game (reference) and the "
                 "simultaneous one, mean ± sd over seeds", fontsize=10)
    fig.tight_layout()
    return rundir.save_figure(fig, path)


def main(runs_dir: str = "runs/study29-game", path: str = "docs/study_games.png") -> None:
    df, histories = load(runs_dir)
    print("runs per cell:", df.groupby(["game", "overlay_opacity"]).size().to_dict(), "\n")
    print(paired_table(df), "\n")
    print(f"wrote {figure(df, histories, path)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
