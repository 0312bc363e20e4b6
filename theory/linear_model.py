"""Linear contrastive model of feature suppression, with and without feature dropout.

A *reconstruction* in the spirit of the linear analysis of Tamkin, Glasgow, He & Goodman, "Feature Dropout:
Revisiting the Role of Augmentations in Contrastive Learning" (arXiv 2212.08378, NeurIPS 2023). The paper's own
theorem text is not available to this project; the model follows ../shared/reference/feature_dropout.md §7 and
the closed form follows the spectral contrastive loss of HaoChen et al. 2021 (derivation: theory/spectral.md).

  data     x = [u; v; n],  u = α(μ_{c_u} + s·ε_u/√d1),  v = β(ν_{c_v} + s·ε_v/√d2),  n ~ N(0, σ_n² I)
  encoder  f(x) = W x,  W ∈ R^{k×d},  bottleneck d1 ≤ k < d1 + d2,  small random init
  views    x⁽¹⁾ = x + ξ₁,  x⁽²⁾ = D_p(x) + ξ₂,  ξ ~ N(0, σ_a² I),  nuisance resampled per view;
           D_p replaces the u-block (or v-block, the control) by a fresh draw with probability p
  loss     InfoNCE, cosine similarity, temperature τ, view-1 anchors; plain GD with weight decay

All (p, seed) runs train together as one batched computation with analytic gradients. Randomness flows from
per-seed torch.Generators shared by every p, so a run never depends on which other p's are in the sweep.
"""
import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

DT = torch.float64  # closed form and probes: float64, the normal equations like the headroom
SIM_DT = torch.float32  # training: float32 is 3-10x faster on CPU and plenty for plain GD


@dataclass(frozen=True)
class Setting:
    # data
    d1: int = 8          # dim of the strong feature u (task A: predict c_u)
    d2: int = 8          # dim of the weak feature v (task B: predict c_v)
    dn: int = 32         # dim of the nuisance n, resampled in each view
    K: int = 10          # classes per task; prototypes are random unit vectors
    alpha: float = 3.0   # α, scale of u (strong)
    beta: float = 1.0    # β < α, scale of v (weak)
    s: float = 1.0       # within-class noise, relative to the unit prototypes
    sigma_n: float = 1.0  # σ_n, nuisance std
    sigma_a: float = 0.2  # σ_a, per-view augmentation noise std
    drop: str = "u"      # which block feature dropout replaces: "u" (the method) or "v" (the control)
    # model and optimisation
    k: int = 12          # embedding dim; the bottleneck d1 <= k < d1 + d2
    tau: float = 0.2     # τ, InfoNCE temperature
    batch: int = 256     # B, pairs per step (B - 1 negatives per anchor)
    steps: int = 2000    # GD steps
    lr: float = 0.05     # GD step size
    wd: float = 5e-4     # weight decay
    init: float = 1e-3   # std of the random init of W
    log_every: int = 25  # steps between weight-norm records (plus steps 1, 2, 4, ... below it)
    # evaluation
    n_probe: int = 5000  # clean samples for each of the probe's train and test sets


def _gen(seed: int, stream: int) -> torch.Generator:
    # stream 0: prototypes and init, 1: training pairs, 2: probe data, 3: Monte-Carlo covariance
    return torch.Generator().manual_seed(1_000_003 * stream + seed)


def world(cfg: Setting, seed: int):
    """Prototypes μ (K, d1), ν (K, d2) and the initial W (k, d) of one seed."""
    g = _gen(seed, 0)
    mu = torch.randn(cfg.K, cfg.d1, generator=g, dtype=DT)
    nu = torch.randn(cfg.K, cfg.d2, generator=g, dtype=DT)
    W0 = cfg.init * torch.randn(cfg.k, cfg.d1 + cfg.d2 + cfg.dn, generator=g, dtype=DT)
    return mu / mu.norm(dim=1, keepdim=True), nu / nu.norm(dim=1, keepdim=True), W0


def _feature(protos, scale, s, shape, g):
    """scale·(proto_c + s·ε/√d), ε ~ N(0, I), for `shape` samples -> (x (*shape, d), c (*shape))."""
    K, d = protos.shape
    c = torch.randint(K, shape, generator=g)
    return scale * (protos[c] + s / math.sqrt(d) * torch.randn(*shape, d, generator=g, dtype=protos.dtype)), c


def clean(cfg: Setting, mu, nu, n: int, g):
    """n clean inputs x (n, d) with labels c_u, c_v (n,)."""
    u, cu = _feature(mu, cfg.alpha, cfg.s, (n,), g)
    v, cv = _feature(nu, cfg.beta, cfg.s, (n,), g)
    return torch.cat([u, v, cfg.sigma_n * torch.randn(n, cfg.dn, generator=g, dtype=DT)], -1), cu, cv


def views(cfg: Setting, mu, nu, shape, g, dtype=SIM_DT):
    """Positive pairs from one random stream, before dropout: x1, x2, delta (..., d) and uniforms r (..., 1).

    View 2 with dropout rate p is x2 + [r < p]·delta (see `mix`): the same r decides dropout for every p, so a
    sweep over p is coupled and a run does not depend on which other p's are in it.
    """
    mu, nu = mu.to(dtype), nu.to(dtype)
    u, v = _feature(mu, cfg.alpha, cfg.s, shape, g)[0], _feature(nu, cfg.beta, cfg.s, shape, g)[0]
    fresh = (_feature(mu, cfg.alpha, cfg.s, shape, g) if cfg.drop == "u"
             else _feature(nu, cfg.beta, cfg.s, shape, g))[0]            # label-destroying redraw
    n = cfg.sigma_n * torch.randn(2, *shape, cfg.dn, generator=g, dtype=dtype)  # nuisance, one per view
    xi = cfg.sigma_a * torch.randn(2, *shape, cfg.d1 + cfg.d2 + cfg.dn, generator=g, dtype=dtype)
    r = torch.rand(*shape, 1, generator=g, dtype=dtype)
    x1 = torch.cat([u, v, n[0]], -1) + xi[0]
    x2 = torch.cat([u, v, n[1]], -1) + xi[1]
    zero = torch.zeros(*shape, cfg.dn, dtype=dtype)
    delta = torch.cat([fresh - u, 0 * v, zero] if cfg.drop == "u" else [0 * u, fresh - v, zero], -1)
    return x1, x2, delta, r


def mix(x2, delta, r, ps):
    """View 2 for every p: (P, ..., d) = x2 + [r < p]·delta."""
    p = torch.as_tensor(ps, dtype=x2.dtype).view(-1, *[1] * x2.dim())
    return x2 + (r < p).to(x2.dtype) * delta


def infonce_grad(x1, x2, W, tau: float):
    """Loss (R,) and analytic dL/dW (R, k, d) of InfoNCE with cosine similarity, view-1 anchors.

    x1, x2: (R, B, d); W: (R, k, d). L = mean_i [logsumexp_j l_ij - l_ii], l_ij = z1_i·z2_j / τ.
    """
    B = x1.shape[1]
    h1, h2 = x1 @ W.transpose(1, 2), x2 @ W.transpose(1, 2)            # (R, B, k)
    n1, n2 = h1.norm(dim=-1, keepdim=True), h2.norm(dim=-1, keepdim=True)
    z1, z2 = h1 / n1, h2 / n2
    logits = z1 @ z2.transpose(1, 2) / tau                               # (R, B, B)
    loss = (torch.logsumexp(logits, -1) - logits.diagonal(dim1=1, dim2=2)).mean(-1)
    G = torch.softmax(logits, -1)
    G.diagonal(dim1=1, dim2=2).sub_(1.0)
    G /= B * tau                                                         # dL/dlogits · (1/τ)
    g1, g2 = G @ z2, G.transpose(1, 2) @ z1                              # dL/dz (R, B, k)
    g1 = (g1 - z1 * (z1 * g1).sum(-1, keepdim=True)) / n1                # back through z = h/|h|
    g2 = (g2 - z2 * (z2 * g2).sum(-1, keepdim=True)) / n2
    return loss, g1.transpose(1, 2) @ x1 + g2.transpose(1, 2) @ x2


def train(cfg: Setting, ps, seeds, chunk: int = 50):
    """Train all (p, seed) runs jointly. Returns W (P, S, k, d), the worlds, and the history dict."""
    P, S = len(ps), len(seeds)
    worlds = [world(cfg, sd) for sd in seeds]
    gens = [_gen(sd, 1) for sd in seeds]
    W = torch.stack([w[2] for w in worlds]).to(SIM_DT).expand(P, -1, -1, -1).clone()  # (P, S, k, d): one init per seed
    d, B = W.shape[-1], cfg.batch
    hist = {"step": [], "norm_u": [], "norm_v": [], "norm_n": [], "loss": []}
    for t0 in range(0, cfg.steps, chunk):
        # a chunk of pairs per seed, shared by every p: each (S, T, B, d) or (S, T, B, 1)
        x1, x2, delta, r = (torch.stack(z) for z in zip(*(views(cfg, w[0], w[1], (chunk, B), g) for w, g in zip(worlds, gens))))
        for t in range(min(chunk, cfg.steps - t0)):
            a = x1[:, t].expand(P, -1, -1, -1).reshape(P * S, B, d)       # (R, B, d), R = P·S runs
            b = mix(x2[:, t], delta[:, t], r[:, t], ps).reshape(P * S, B, d)
            loss, grad = infonce_grad(a, b, W.view(P * S, cfg.k, d), cfg.tau)
            W -= cfg.lr * (grad.view_as(W) + cfg.wd * W)
            step = t0 + t + 1
            if step % cfg.log_every == 0 or step == cfg.steps or (step < cfg.log_every and step & (step - 1) == 0):
                if not torch.isfinite(loss).all():
                    raise FloatingPointError(f"non-finite InfoNCE loss at step {step}")
                hist["step"].append(step)
                for key, blk in (("norm_u", slice(0, cfg.d1)), ("norm_v", slice(cfg.d1, cfg.d1 + cfg.d2)),
                                 ("norm_n", slice(cfg.d1 + cfg.d2, d))):
                    hist[key].append(W[..., blk].norm(dim=(-1, -2)).tolist())  # ‖W_u‖_F etc., (P, S)
                hist["loss"].append(loss.view(P, S).tolist())
    return W, worlds, hist


def probe_accuracy(F_tr, y_tr, F_te, y_te, K: int):
    """Least-squares one-hot regression on [F, 1]; F: (R, n, m) features. Returns test accuracy (R,)."""
    one = torch.ones(*F_tr.shape[:-1], 1, dtype=DT)
    A, A_te = torch.cat([F_tr, one], -1), torch.cat([F_te, one.expand(*F_te.shape[:-1], 1)], -1)
    Y = torch.nn.functional.one_hot(y_tr, K).to(DT).expand(A.shape[0], -1, -1)
    gram = A.transpose(1, 2) @ A
    ridge = 1e-9 * gram.diagonal(dim1=1, dim2=2).mean(-1).view(-1, 1, 1) * torch.eye(gram.shape[-1], dtype=DT)
    coef = torch.linalg.solve(gram + ridge, A.transpose(1, 2) @ Y)      # (R, m + 1, K)
    return ((A_te @ coef).argmax(-1) == y_te).to(DT).mean(-1)


def probe(cfg: Setting, W, worlds, seeds):
    """Clean-input probe accuracies acc_A (c_u) and acc_B (c_v), each (P, S), for W (P, S, k, d)."""
    acc = torch.zeros(2, *W.shape[:2], dtype=DT)
    for j, (sd, (mu, nu, _)) in enumerate(zip(seeds, worlds)):
        g = _gen(sd, 2)
        (x_tr, a_tr, b_tr), (x_te, a_te, b_te) = clean(cfg, mu, nu, cfg.n_probe, g), clean(cfg, mu, nu, cfg.n_probe, g)
        Wj = W[:, j].to(DT).transpose(1, 2)
        F_tr, F_te = x_tr @ Wj, x_te @ Wj  # (P, n, k)
        acc[0, :, j] = probe_accuracy(F_tr, a_tr, F_te, a_te, cfg.K)
        acc[1, :, j] = probe_accuracy(F_tr, b_tr, F_te, b_te, cfg.K)
    return acc[0], acc[1]


# ---------------------------------------------------------------- spectral closed form (theory/spectral.md)

def class_spectrum(protos):
    """Eigenvalues (d,), descending, of the between-class covariance of K prototypes: rank <= min(K-1, d)."""
    c = protos - protos.mean(0)
    return torch.linalg.eigvalsh(c.T @ c / protos.shape[0]).flip(0).clamp_min(0)


def block_spectra(cfg: Setting, mu, nu, whiten: bool = False):
    """p = 0 cross-view eigenvalues of the u and v blocks: α²(b_i + s²/d1), β²(b'_j + s²/d2).

    whiten=True divides by the matching eigenvalue of the view covariance Σ (the exact linear optimum of
    HaoChen's loss): c/(c + σ_a²). Dropout multiplies the dropped block by (1 - p) in both versions.
    """
    lu = cfg.alpha ** 2 * (class_spectrum(mu) + cfg.s ** 2 / cfg.d1)
    lv = cfg.beta ** 2 * (class_spectrum(nu) + cfg.s ** 2 / cfg.d2)
    if whiten:
        lu, lv = lu / (lu + cfg.sigma_a ** 2), lv / (lv + cfg.sigma_a ** 2)
    return lu, lv


def critical_ps(cfg: Setting, mu, nu, whiten: bool = False):
    """p*_j (d2,): v-direction j (1-based, by decreasing eigenvalue) is in the top-k space iff p > p*_j.

    v_j must beat the (k - j + 1)-th u eigenvalue: p*_j = 1 - λ_v,j / λ_u,(k-j+1); 0 if that index exceeds
    d1 (a free slot), inf if j > k (no slot). Only defined for cfg.drop == "u".
    """
    lu, lv = block_spectra(cfg, mu, nu, whiten)
    out = torch.full((cfg.d2,), math.inf, dtype=DT)
    for j in range(1, min(cfg.d2, cfg.k) + 1):
        i = cfg.k - j + 1
        out[j - 1] = 0.0 if i > cfg.d1 else max(0.0, 1.0 - float(lv[j - 1] / lu[i - 1]))
    return out


def p_star(cfg: Setting, mu, nu, whiten: bool = False, tol: float = 1e-9):
    """Critical p* at which every class-informative v-direction (rank of ν's covariance) is in the top-k."""
    r_v = int((class_spectrum(nu) > tol).sum())
    return float(critical_ps(cfg, mu, nu, whiten)[r_v - 1])


def cross_view_matrix(cfg: Setting, mu, nu, p: float, whiten: bool = False):
    """The exact (d, d) cross-view covariance C (or Σ^{-1/2} C Σ^{-1/2}), assembled block by block."""
    def cov(protos, scale):  # scale²(B + s²/d I), the covariance of scale·(proto_c + s ε/√d)
        c = protos - protos.mean(0)
        return scale ** 2 * (c.T @ c / protos.shape[0] + cfg.s ** 2 / protos.shape[1] * torch.eye(protos.shape[1], dtype=DT))
    Cu, Cv = cov(mu, cfg.alpha), cov(nu, cfg.beta)
    C = torch.block_diag(Cu, Cv, torch.zeros(cfg.dn, cfg.dn, dtype=DT))  # nuisance: resampled, no cross term
    Sigma = torch.block_diag(Cu, Cv, cfg.sigma_n ** 2 * torch.eye(cfg.dn, dtype=DT)) + cfg.sigma_a ** 2 * torch.eye(C.shape[0], dtype=DT)
    blk = slice(0, cfg.d1) if cfg.drop == "u" else slice(cfg.d1, cfg.d1 + cfg.d2)
    C[blk, blk] *= 1 - p
    if whiten:
        e, V = torch.linalg.eigh(Sigma)
        S_ih = V @ torch.diag(e.rsqrt()) @ V.T
        C = S_ih @ C @ S_ih
    return C


def topk_space(C, k: int, tol: float = 1e-10):
    """Rows spanning the spectral optimum: top-k eigenvectors of sym(C) with positive eigenvalue, (m, d)."""
    e, V = torch.linalg.eigh((C + C.T) / 2)
    keep = torch.argsort(e, descending=True)[:k]
    return V[:, keep[e[keep] > tol * e.abs().max()]].T


def v_count(C, cfg: Setting):
    """How many v-directions the top-k space holds: its squared mass on the v coordinates."""
    V = topk_space(C, cfg.k)
    return float((V[:, cfg.d1:cfg.d1 + cfg.d2] ** 2).sum())


def spectral_accuracy(cfg: Setting, worlds, seeds, ps, whiten: bool = False):
    """Probe accuracies (2, len(ps), S) of the spectral optimum's representation, on the simulation's probe data."""
    W = torch.stack([torch.stack([_pad(topk_space(cross_view_matrix(cfg, mu, nu, p, whiten), cfg.k), cfg.k)
                                  for (mu, nu, _) in worlds]) for p in ps])
    return torch.stack(probe(cfg, W, worlds, seeds))


def _pad(V, k):  # zero rows keep the stack rectangular; the probe ignores them
    return torch.cat([V, torch.zeros(k - V.shape[0], V.shape[1], dtype=DT)])


# ---------------------------------------------------------------- sweep, table, figures, CLI

def half_point(ps, acc):
    """First p where the curve reaches halfway from acc(p_0) to acc(p_last), by linear interpolation."""
    ps, acc = list(map(float, ps)), list(map(float, acc))
    mid = (acc[0] + acc[-1]) / 2
    for i in range(1, len(ps)):
        if (acc[i] - mid) * (acc[-1] - acc[0]) >= 0:
            return ps[i - 1] + (ps[i] - ps[i - 1]) * (mid - acc[i - 1]) / (acc[i] - acc[i - 1] or 1.0)
    return ps[-1]


def sweep(cfg: Setting, ps=(0.0, 0.25, 0.5, 0.75, 1.0), seeds=(0, 1, 2), theory_grid: int = 41):
    """Train, probe and compare with the spectral closed form. Returns a JSON-ready dict."""
    t0, threads = time.time(), torch.get_num_threads()
    torch.set_num_threads(1)  # these small batched matmuls run slower on 2 threads than on 1; restored below
    try:
        W, worlds, hist = train(cfg, list(ps), list(seeds))
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
            "p_star_whitened": [p_star(cfg, mu, nu, True) for mu, nu, _ in worlds] if cfg.drop == "u" else None,
            "p_grid": grid,
            "acc_A": spec[False][0].tolist(), "acc_B": spec[False][1].tolist(),
            "acc_A_whitened": spec[True][0].tolist(), "acc_B_whitened": spec[True][1].tolist(),
            "transition": half_point(grid, spec[False][1]), "transition_whitened": half_point(grid, spec[True][1]),
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
        rows.append(f"\np* (spectral, unwhitened) = {_mean(th['p_star']):.2f}, p* (whitened) = "
                    f"{_mean(th['p_star_whitened']):.2f}; acc_B half-way: simulation {res['transition_sim']:.2f}, "
                    f"spectral {th['transition']:.2f}, whitened {th['transition_whitened']:.2f}")
    return "\n".join(rows)


def _mean(x):
    return sum(x) / len(x)


def plot_accuracy(res):
    """Probe accuracy vs p (seed mean, seeds as dots) against the spectral closed form and p*."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ps, th, K = res["ps"], res["theory"], res["setting"]["K"]
    for key, name, col in (("acc_A", "task A (u, strong)", "C0"), ("acc_B", "task B (v, weak)", "C3")):
        acc = torch.tensor(res[key])
        ax.plot(ps, acc.mean(1), "o-", color=col, label=f"InfoNCE sim: {name}")
        for j in range(acc.shape[1]):
            ax.plot(ps, acc[:, j], ".", color=col, alpha=0.4)
        ax.plot(th["p_grid"], th[key], "--", color=col, lw=1, label="spectral closed form" if key == "acc_A" else None)
        ax.plot(th["p_grid"], th[key + "_whitened"], ":", color=col, lw=1, label="whitened closed form" if key == "acc_A" else None)
    if th["p_star"] is not None:
        ax.axvline(_mean(th["p_star"]), color="k", ls="--", lw=0.8, label=f"p* = {_mean(th['p_star']):.2f}")
        ax.axvline(_mean(th["p_star_whitened"]), color="k", ls=":", lw=0.8, label=f"p* whitened = {_mean(th['p_star_whitened']):.2f}")
    ax.axhline(1 / K, color="gray", lw=0.5)
    ax.set(xlabel=f"feature dropout rate p (block {res['setting']['drop']})", ylabel="clean probe accuracy", ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    return fig


def plot_norms(res):
    """‖W_u‖ (solid) and ‖W_v‖ (dashed) over training, seed mean, one colour per p."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    h = res["history"]
    nu, nv = torch.tensor(h["norm_u"]).mean(-1), torch.tensor(h["norm_v"]).mean(-1)  # (T, P)
    for i, p in enumerate(res["ps"]):
        col = plt.cm.viridis(i / max(1, len(res["ps"]) - 1))
        ax.plot(h["step"], nu[:, i], "-", color=col, label=f"p = {p:.2f}")
        ax.plot(h["step"], nv[:, i], "--", color=col)
    ax.set(xlabel="GD step (log scale: cosine similarity makes the first steps from small init jump)",
           ylabel="‖W_u‖_F (solid), ‖W_v‖_F (dashed)", xscale="log", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(res, out) -> Path:
    """The one place that writes: results.json, results.csv, table.md and figures/*.png under `out`."""
    import matplotlib.pyplot as plt
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "table.md").write_text(table(res) + "\n")
    lines = ["p,seed,acc_A,acc_B,norm_u,norm_v"] + [
        f"{p},{sd},{res['acc_A'][i][j]:.4f},{res['acc_B'][i][j]:.4f},{res['norm_u'][i][j]:.4f},{res['norm_v'][i][j]:.4f}"
        for i, p in enumerate(res["ps"]) for j, sd in enumerate(res["seeds"])]
    (out / "results.csv").write_text("\n".join(lines) + "\n")
    for name, fig in (("accuracy_vs_p", plot_accuracy(res)), ("weight_norms", plot_norms(res))):
        fig.savefig(out / "figures" / f"{name}.png", dpi=130)
        plt.close(fig)
    return out


def main(argv=None):
    d = Setting()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--alpha", type=float, default=d.alpha, help="α, strong-feature scale; larger α = stronger suppression at p = 0")
    ap.add_argument("--beta", type=float, default=d.beta, help="β < α, weak-feature scale")
    ap.add_argument("--k", type=int, default=d.k, help="embedding dim; keep d1 <= k < d1 + d2, else the probe decodes v from tiny weights")
    ap.add_argument("--tau", type=float, default=d.tau, help="InfoNCE temperature τ")
    ap.add_argument("--d1", type=int, default=d.d1, help="dim of u")
    ap.add_argument("--d2", type=int, default=d.d2, help="dim of v")
    ap.add_argument("--dn", type=int, default=d.dn, help="dim of the nuisance")
    ap.add_argument("--sigma-a", type=float, default=d.sigma_a, help="σ_a, view noise; ~1 puts the sim in the closed form's regime (see theory/spectral.md)")
    ap.add_argument("--steps", type=int, default=d.steps, help="GD steps; more steps move the transition to smaller p")
    ap.add_argument("--lr", type=float, default=d.lr, help="GD step size; above ~0.2 the cosine loss gets noisy")
    ap.add_argument("--wd", type=float, default=d.wd, help="weight decay")
    ap.add_argument("--batch", type=int, default=d.batch, help="pairs per step")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one data stream, prototype set and init per seed")
    ap.add_argument("--ps", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0], help="dropout rates to sweep")
    ap.add_argument("--drop", choices=["u", "v"], default=d.drop, help="drop the strong u (method) or the weak v (control)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"), help="output directory")
    a = ap.parse_args(argv)
    cfg = replace(d, alpha=a.alpha, beta=a.beta, k=a.k, tau=a.tau, d1=a.d1, d2=a.d2, dn=a.dn, sigma_a=a.sigma_a,
                  steps=a.steps, lr=a.lr, wd=a.wd, batch=a.batch, drop=a.drop)
    t0 = time.time()
    res = sweep(cfg, a.ps, a.seeds)
    out = save(res, a.out)
    print(table(res))
    print(f"\nsweep {res['wall_s']:.1f} s, total {time.time() - t0:.1f} s; wrote {out}")
    return res


if __name__ == "__main__":
    main()
