"""The linear contrastive model, simulated: data with a strong feature u, a weak feature v and a nuisance; a
linear encoder trained by plain gradient descent on InfoNCE; least-squares probes for both features.

  data     x = [u; v; n],  u = α(μ_{c_u} + s·ε_u/√d1),  v = β(ν_{c_v} + s·ε_v/√d2),  n ~ N(0, σ_n² I)
  encoder  f(x) = W x,  W ∈ R^{k×d},  bottleneck d1 ≤ k < d1 + d2,  small random init
  views    x⁽¹⁾ = x + ξ₁,  x⁽²⁾ = D_p(x) + ξ₂,  ξ ~ N(0, σ_a² I),  nuisance resampled per view;
           D_p replaces the u-block (or v-block, the control) by a fresh draw with probability p
  loss     InfoNCE, cosine similarity, temperature τ, view-1 anchors; plain GD with weight decay

All (p, seed) runs train together as one batched computation with analytic gradients. Randomness flows from
per-seed torch.Generators shared by every p, so a run never depends on which other p's are in the sweep.
"""
import math
from dataclasses import asdict, dataclass

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


def check(cfg: Setting, ps=(0.0,), seeds=(0,)) -> None:
    """ValueError naming the setting, its value and what is allowed, before any training."""
    for name, v in asdict(cfg).items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{name} = {v} is invalid: allowed a finite number")
    d = cfg.d1 + cfg.d2 + cfg.dn
    rules = [
        ("d1, d2, dn", min(cfg.d1, cfg.d2, cfg.dn) >= 1, "dimensions of at least 1"),
        ("k", 1 <= cfg.k <= d, f"an embedding dimension from 1 to the input's {d} (d1 + d2 + dn)"),
        ("K", cfg.K >= 2, "at least 2 classes"),
        ("alpha, beta", cfg.alpha > cfg.beta > 0,
         "positive feature scales with β < α (u the strong feature, v the weak one)"),
        ("tau", cfg.tau > 0, "a positive temperature"),
        ("sigma_a, sigma_n, s", min(cfg.sigma_a, cfg.sigma_n, cfg.s) >= 0, "non-negative noise scales"),
        ("batch", cfg.batch >= 2, "at least 2 pairs (InfoNCE needs negatives)"),
        ("steps", cfg.steps >= 1, "at least 1 step"),
        ("lr", cfg.lr > 0, "a positive step size"),
        ("wd", cfg.wd >= 0, "a non-negative weight decay"),
        ("n_probe", cfg.n_probe >= cfg.K, f"at least K = {cfg.K} probe samples"),
        ("drop", cfg.drop in ("u", "v"), "u or v"),
        ("ps", len(ps) > 0 and all(math.isfinite(p) and 0 <= p <= 1 for p in ps), "dropout rates in [0, 1]"),
        ("seeds", len(seeds) > 0 and all(int(s) == s and s >= 0 for s in seeds), "non-negative integers"),
    ]
    values = {"d1, d2, dn": (cfg.d1, cfg.d2, cfg.dn), "k": cfg.k, "K": cfg.K,
              "alpha, beta": (cfg.alpha, cfg.beta), "tau": cfg.tau, "batch": cfg.batch, "steps": cfg.steps,
              "sigma_a, sigma_n, s": (cfg.sigma_a, cfg.sigma_n, cfg.s), "lr": cfg.lr, "wd": cfg.wd,
              "n_probe": cfg.n_probe, "drop": cfg.drop, "ps": list(ps), "seeds": list(seeds)}
    for name, ok, allowed in rules:
        if not ok:
            raise ValueError(f"{name} = {values[name]} is invalid: allowed {allowed}")


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


def train(cfg: Setting, ps, seeds, chunk: int = 50, say=None):
    """Train all (p, seed) runs jointly. Returns W (P, S, k, d), the worlds, and the history dict.
    ``say``: called with a progress line every tenth of the steps."""
    P, S = len(ps), len(seeds)
    worlds = [world(cfg, sd) for sd in seeds]
    gens = [_gen(sd, 1) for sd in seeds]
    # (P, S, k, d): one init per seed
    W = torch.stack([w[2] for w in worlds]).to(SIM_DT).expand(P, -1, -1, -1).clone()
    d, B = W.shape[-1], cfg.batch
    hist = {"step": [], "norm_u": [], "norm_v": [], "norm_n": [], "loss": []}
    for t0 in range(0, cfg.steps, chunk):
        # a chunk of pairs per seed, shared by every p: each (S, T, B, d) or (S, T, B, 1)
        x1, x2, delta, r = (torch.stack(z) for z in zip(*(views(cfg, w[0], w[1], (chunk, B), g)
                                                          for w, g in zip(worlds, gens))))
        for t in range(min(chunk, cfg.steps - t0)):
            a = x1[:, t].expand(P, -1, -1, -1).reshape(P * S, B, d)       # (R, B, d), R = P·S runs
            b = mix(x2[:, t], delta[:, t], r[:, t], ps).reshape(P * S, B, d)
            loss, grad = infonce_grad(a, b, W.view(P * S, cfg.k, d), cfg.tau)
            W -= cfg.lr * (grad.view_as(W) + cfg.wd * W)
            step = t0 + t + 1
            if (step % cfg.log_every == 0 or step == cfg.steps
                    or (step < cfg.log_every and step & (step - 1) == 0)):
                if not torch.isfinite(loss).all():
                    raise FloatingPointError(f"the InfoNCE loss became non-finite at step {step}: lower lr "
                                             f"(now {cfg.lr:g}) or raise tau (now {cfg.tau:g})")
                hist["step"].append(step)
                for key, blk in (("norm_u", slice(0, cfg.d1)), ("norm_v", slice(cfg.d1, cfg.d1 + cfg.d2)),
                                 ("norm_n", slice(cfg.d1 + cfg.d2, d))):
                    hist[key].append(W[..., blk].norm(dim=(-1, -2)).tolist())  # ‖W_u‖_F etc., (P, S)
                hist["loss"].append(loss.view(P, S).tolist())
            if say is not None and (step % max(1, cfg.steps // 10) == 0 or step == cfg.steps):
                say(f"  step {step}/{cfg.steps}: InfoNCE loss {loss.mean().item():.3f} (mean of {P * S} "
                    f"runs)")
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
        (x_tr, a_tr, b_tr), (x_te, a_te, b_te) = (clean(cfg, mu, nu, cfg.n_probe, g),
                                                  clean(cfg, mu, nu, cfg.n_probe, g))
        Wj = W[:, j].to(DT).transpose(1, 2)
        F_tr, F_te = x_tr @ Wj, x_te @ Wj  # (P, n, k)
        acc[0, :, j] = probe_accuracy(F_tr, a_tr, F_te, a_te, cfg.K)
        acc[1, :, j] = probe_accuracy(F_tr, b_tr, F_te, b_te, cfg.K)
    return acc[0], acc[1]
