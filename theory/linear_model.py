"""Linear contrastive model of feature suppression, with and without feature dropout: ``python
theory/linear_model.py`` runs the sweep and writes its results.

A *reconstruction* in the spirit of the linear analysis of Tamkin, Glasgow, He & Goodman, "Feature Dropout:
Revisiting the Role of Augmentations in Contrastive Learning" (arXiv 2212.08378, NeurIPS 2023). The paper's
own theorem text is not available to this project; the model follows ../shared/reference/feature_dropout.md §7
and the closed form follows the spectral contrastive loss of HaoChen et al. 2021 (derivation:
theory/spectral.md).

  data     x = [u; v; n],  u = α(μ_{c_u} + s·ε_u/√d1),  v = β(ν_{c_v} + s·ε_v/√d2),  n ~ N(0, σ_n² I)
  encoder  f(x) = W x,  W ∈ R^{k×d},  bottleneck d1 ≤ k < d1 + d2,  small random init
  views    x⁽¹⁾ = x + ξ₁,  x⁽²⁾ = D_p(x) + ξ₂,  ξ ~ N(0, σ_a² I),  nuisance resampled per view;
           D_p replaces the u-block (or v-block, the control) by a fresh draw with probability p
  loss     InfoNCE, cosine similarity, temperature τ, view-1 anchors; plain GD with weight decay

The pieces: ``theory.simulation`` (data, views, the InfoNCE gradient, training, probes),
``theory.closed_form`` (the spectral optimum and its critical p*), ``theory.sweep`` (the sweep, table and
files) and ``theory.figures``. This module is the command line and gathers their public names, so
``from theory import linear_model as lm`` reaches all of them.
"""
import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as `python theory/linear_model.py`: make the package `theory` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from theory.closed_form import (  # noqa: E402
    block_spectra,
    class_spectrum,
    critical_ps,
    cross_view_matrix,
    p_star,
    spectral_accuracy,
    topk_space,
    v_count,
)
from theory.figures import plot_accuracy, plot_norms  # noqa: E402
from theory.simulation import (  # noqa: E402
    DT,
    SIM_DT,
    Setting,
    check,
    clean,
    infonce_grad,
    mix,
    probe,
    probe_accuracy,
    train,
    views,
    world,
)
from theory.sweep import half_point, save, sweep, table  # noqa: E402

__all__ = ["DT", "SIM_DT", "Setting", "block_spectra", "check", "class_spectrum", "clean", "critical_ps",
           "cross_view_matrix", "half_point", "infonce_grad", "main", "mix", "p_star", "plot_accuracy",
           "plot_norms", "probe", "probe_accuracy", "save", "spectral_accuracy", "sweep", "table",
           "topk_space", "train", "v_count", "views", "world"]


def main(argv=None):
    d = Setting()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--alpha", type=float, default=d.alpha,
                    help="α, strong-feature scale; larger α = stronger suppression at p = 0")
    ap.add_argument("--beta", type=float, default=d.beta, help="β < α, weak-feature scale")
    ap.add_argument("--k", type=int, default=d.k,
                    help="embedding dim; keep d1 <= k < d1 + d2, else the probe decodes v from tiny weights")
    ap.add_argument("--tau", type=float, default=d.tau, help="InfoNCE temperature τ")
    ap.add_argument("--d1", type=int, default=d.d1, help="dim of u")
    ap.add_argument("--d2", type=int, default=d.d2, help="dim of v")
    ap.add_argument("--dn", type=int, default=d.dn, help="dim of the nuisance")
    ap.add_argument("--sigma-a", type=float, default=d.sigma_a,
                    help="σ_a, view noise; ~1 puts the sim in the closed form's regime "
                         "(see theory/spectral.md)")
    ap.add_argument("--steps", type=int, default=d.steps,
                    help="GD steps; more steps move the transition to smaller p")
    ap.add_argument("--lr", type=float, default=d.lr,
                    help="GD step size; above ~0.2 the cosine loss gets noisy")
    ap.add_argument("--wd", type=float, default=d.wd, help="weight decay")
    ap.add_argument("--batch", type=int, default=d.batch, help="pairs per step")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="one data stream, prototype set and init per seed")
    ap.add_argument("--ps", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                    help="dropout rates to sweep")
    ap.add_argument("--drop", choices=["u", "v"], default=d.drop,
                    help="drop the strong u (method) or the weak v (control)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"), help="output directory")
    a = ap.parse_args(argv)
    cfg = replace(d, alpha=a.alpha, beta=a.beta, k=a.k, tau=a.tau, d1=a.d1, d2=a.d2, dn=a.dn,
                  sigma_a=a.sigma_a, steps=a.steps, lr=a.lr, wd=a.wd, batch=a.batch, drop=a.drop)
    t0 = time.time()
    try:
        res = sweep(cfg, a.ps, a.seeds, say=lambda line: print(line, flush=True))
    except (ValueError, FloatingPointError) as e:  # a bad setting, or a diverging run: one line, exit 2
        ap.error(str(e))
    out = save(res, a.out)
    print(table(res))
    print(f"\nsweep {res['wall_s']:.1f} s, total {time.time() - t0:.1f} s; wrote {out}")
    return res


if __name__ == "__main__":
    main()
