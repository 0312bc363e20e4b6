"""The sweep over the dropout rate p: train every (p, seed) run, probe both features, compare the weak
feature's probe curve with the spectral closed form, and write the results (JSON, CSV, a markdown table,
figures)."""
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .closed_form import p_star, spectral_accuracy
from .figures import mean, plot_accuracy, plot_norms
from .simulation import Setting, check, probe, train


def half_point(ps, acc):
    """First p where the curve reaches halfway from acc(p_0) to acc(p_last), by linear interpolation."""
    ps, acc = list(map(float, ps)), list(map(float, acc))
    mid = (acc[0] + acc[-1]) / 2
    for i in range(1, len(ps)):
        if (acc[i] - mid) * (acc[-1] - acc[0]) >= 0:
            return ps[i - 1] + (ps[i] - ps[i - 1]) * (mid - acc[i - 1]) / (acc[i] - acc[i - 1] or 1.0)
    return ps[-1]


def sweep(cfg: Setting, ps=(0.0, 0.25, 0.5, 0.75, 1.0), seeds=(0, 1, 2), theory_grid: int = 41, say=None):
    """Train, probe and compare with the spectral closed form. Returns a JSON-ready dict."""
    check(cfg, ps, seeds)  # a bad setting fails here, before any training
    t0, threads = time.time(), torch.get_num_threads()
    torch.set_num_threads(1)  # these small batched matmuls run slower on 2 threads than on 1; restored below
    try:
        if say is not None:
            say(f"training {len(ps)} dropout rates × {len(seeds)} seeds jointly, {cfg.steps} GD steps ...")
        W, worlds, hist = train(cfg, list(ps), list(seeds), say=say)
        acc_A, acc_B = probe(cfg, W, worlds, list(seeds))
        grid = torch.linspace(0, 1, theory_grid).tolist()
        spec = {wh: spectral_accuracy(cfg, worlds, list(seeds), grid, wh).mean(-1) for wh in (False, True)}
    finally:
        torch.set_num_threads(threads)
    mean_B = acc_B.mean(1).tolist()
    return {
        "setting": asdict(cfg), "ps": list(ps), "seeds": list(seeds),
        "acc_A": acc_A.tolist(), "acc_B": acc_B.tolist(),                  # (P, S)
        "norm_u": hist["norm_u"][-1], "norm_v": hist["norm_v"][-1],        # final ‖W_u‖, ‖W_v‖, (P, S)
        "history": hist,
        "theory": {
            "p_star": [p_star(cfg, mu, nu) for mu, nu, _ in worlds] if cfg.drop == "u" else None,
            "p_star_whitened": [p_star(cfg, mu, nu, True)
                                for mu, nu, _ in worlds] if cfg.drop == "u" else None,
            "p_grid": grid,
            "acc_A": spec[False][0].tolist(), "acc_B": spec[False][1].tolist(),
            "acc_A_whitened": spec[True][0].tolist(), "acc_B_whitened": spec[True][1].tolist(),
            "transition": half_point(grid, spec[False][1]),
            "transition_whitened": half_point(grid, spec[True][1]),
        },
        "transition_sim": half_point(ps, mean_B),
        "wall_s": time.time() - t0,
    }


def table(res) -> str:
    """Markdown table: per p, accuracies over seeds (a / b / c) and the seed-mean weight norms."""
    rows = ["| p (drop %s) | task A (u) acc | task B (v) acc | ‖W_u‖ | ‖W_v‖ |" % res["setting"]["drop"],
            "|---|---|---|---|---|"]
    for i, p in enumerate(res["ps"]):
        fmt = lambda a: " / ".join(f"{x:.2f}" for x in a)
        nu, nv = res["norm_u"][i], res["norm_v"][i]
        rows.append(f"| {p:.2f} | {fmt(res['acc_A'][i])} | {fmt(res['acc_B'][i])} | "
                    f"{sum(nu) / len(nu):.2f} | {sum(nv) / len(nv):.2f} |")
    th = res["theory"]
    if th["p_star"] is not None:
        rows.append(f"\np* (spectral, unwhitened) = {mean(th['p_star']):.2f}, p* (whitened) = "
                    f"{mean(th['p_star_whitened']):.2f}; acc_B half-way: "
                    f"simulation {res['transition_sim']:.2f}, "
                    f"spectral {th['transition']:.2f}, whitened {th['transition_whitened']:.2f}")
    return "\n".join(rows)


def save(res, out) -> Path:
    """The one place that writes: results.json, results.csv, table.md and figures/*.png under `out`."""
    import matplotlib.pyplot as plt
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "table.md").write_text(table(res) + "\n")
    lines = ["p,seed,acc_A,acc_B,norm_u,norm_v"] + [
        f"{p},{sd},{res['acc_A'][i][j]:.4f},{res['acc_B'][i][j]:.4f},"
        f"{res['norm_u'][i][j]:.4f},{res['norm_v'][i][j]:.4f}"
        for i, p in enumerate(res["ps"]) for j, sd in enumerate(res["seeds"])]
    (out / "results.csv").write_text("\n".join(lines) + "\n")
    for name, fig in (("accuracy_vs_p", plot_accuracy(res)), ("weight_norms", plot_norms(res))):
        fig.savefig(out / "figures" / f"{name}.png", dpi=130)
        plt.close(fig)
    return out
