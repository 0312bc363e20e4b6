"""Specification of theory.linear_model: the reconstructed linear contrastive model of feature dropout.

Small, fast settings. Chance is 1/K = 0.10 and the probe ceiling is about 0.75 (within-class noise s = 1).
"""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from theory import linear_model as lm
from theory import simulation

# k = d1 = 8: the tightest bottleneck, so suppression shows as a v probe near chance (theory/spectral.md)
FAST = lm.Setting(k=8, steps=2500, batch=128, n_probe=2000)
PS = [0.0, 0.75, 1.0]


@pytest.fixture(scope="module")
def sweep_u():
    return lm.sweep(FAST, PS, seeds=[0, 1], theory_grid=5)


@pytest.fixture(scope="module")
def sweep_v():
    return lm.sweep(replace(FAST, drop="v"), PS, seeds=[0, 1], theory_grid=5)


def mean(res, key):
    return torch.tensor(res[key]).mean(1)  # over seeds, (P,)


def test_infonce_grad_matches_autograd():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(2, 3, 16, 10, generator=g, dtype=torch.float64).unbind(0)
    W = torch.randn(3, 4, 10, generator=g, dtype=torch.float64, requires_grad=True)
    loss, grad = lm.infonce_grad(x1, x2, W.detach(), tau=0.3)
    z1 = torch.nn.functional.normalize(x1 @ W.transpose(1, 2), dim=-1)
    z2 = torch.nn.functional.normalize(x2 @ W.transpose(1, 2), dim=-1)
    ref = torch.stack([torch.nn.functional.cross_entropy(z1[r] @ z2[r].T / 0.3, torch.arange(16))
                       for r in range(3)])
    ref.sum().backward()
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(grad, W.grad)


def test_suppression_without_dropout(sweep_u):
    A, B = mean(sweep_u, "acc_A"), mean(sweep_u, "acc_B")
    assert A[0] > 0.6, "u probe near its ~0.75 ceiling"
    assert B[0] < 0.25, "v probe near chance (0.10): u takes the bottleneck"


def test_intermediate_dropout_learns_both(sweep_u):
    A, B = mean(sweep_u, "acc_A"), mean(sweep_u, "acc_B")
    assert A[1] > 0.3 and B[1] > 0.3, "both well above chance at p = 0.75"
    assert B[1] > B[0] + 0.2


def test_full_dropout_makes_u_invisible(sweep_u):
    assert mean(sweep_u, "acc_A")[2] < 0.2


def test_weak_weights_grow_with_p(sweep_u):
    nv, nu = mean(sweep_u, "norm_v"), mean(sweep_u, "norm_u")
    assert nv[0] < nv[1] and nv[0] < nv[2]
    assert nu[0] > nu[1] > nu[2]


def test_dropping_the_weak_feature_does_not_rescue_it(sweep_u, sweep_v):
    B_v, B_u = mean(sweep_v, "acc_B"), mean(sweep_u, "acc_B")
    assert (B_v < 0.25).all(), "control: v stays suppressed (and at p = 1 is made invisible)"
    assert B_v[1] < B_u[1] - 0.2


def test_run_depends_only_on_its_own_p_and_seed():
    cfg = replace(FAST, steps=60, n_probe=500)
    W_all, _, _ = lm.train(cfg, [0.0, 0.5, 1.0], [3, 4])
    W_one, _, _ = lm.train(cfg, [0.5], [4])
    torch.testing.assert_close(W_one[0, 0], W_all[1, 1])


@pytest.mark.parametrize("cfg", [lm.Setting(), FAST, lm.Setting(K=5), lm.Setting(alpha=2.0, s=0.5, k=10),
                                 lm.Setting(d2=6, k=11, K=4, s=0.0)])
@pytest.mark.parametrize("whiten", [False, True])
def test_closed_form_p_star_matches_brute_force_eigendecomposition(cfg, whiten):
    """p*_j from the block formula == the p where the full d×d eigen-decomposition's top-k gains its j-th
    v-direction."""
    mu, nu, _ = lm.world(cfg, seed=7)
    closed = lm.critical_ps(cfg, mu, nu, whiten)
    count = lambda p: lm.v_count(lm.cross_view_matrix(cfg, mu, nu, p, whiten), cfg)
    informative = int((lm.class_spectrum(nu) > 1e-9).sum()) if cfg.s == 0 else cfg.d2
    for j in range(1, informative + 1):
        lo, hi = 0.0, 1.0 - 1e-12  # bisection for the smallest p with at least j v-directions
        if count(lo) >= j - 0.5:
            assert closed[j - 1] == 0.0
            continue
        for _ in range(45):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if count(mid) >= j - 0.5 else (mid, hi)
        assert abs(closed[j - 1] - hi) < 1e-6, (j, closed, hi)
    r_v = int((lm.class_spectrum(nu) > 1e-9).sum())  # min(K - 1, d2): only these v-directions carry c_v
    assert lm.p_star(cfg, mu, nu, whiten) == closed[r_v - 1]


def test_cross_view_covariance_of_the_sampled_views_matches_closed_form():
    """Monte-Carlo check of the blocks: (1-p)α²(B_u + s²/d1), β²(B_v + s²/d2), 0 for the nuisance."""
    cfg, p = lm.Setting(), 0.4
    mu, nu, _ = lm.world(cfg, seed=0)
    x1, x2, delta, r = lm.views(cfg, mu, nu, (200_000,), simulation._gen(0, 3), dtype=torch.float64)
    x2 = lm.mix(x2, delta, r, [p])[0]
    x1, x2 = x1 - x1.mean(0), x2 - x2.mean(0)
    C_hat = (x1.T @ x2 + x2.T @ x1) / (2 * len(x1))
    C = lm.cross_view_matrix(cfg, mu, nu, p)
    assert (C_hat - C).abs().max() < 0.06  # Monte-Carlo error ~ α²/√N·few
    assert round(lm.v_count(C_hat, cfg)) == round(lm.v_count(C, cfg))


def test_simulation_follows_closed_form_in_its_regime():
    """With view noise σ_a ≈ 1 the two closed forms nearly agree; the InfoNCE acc_B curve must lie within
    ±0.10 of the band between them at every p, and its half-way point within 0.10 of the band's."""
    cfg = lm.Setting(alpha=2.0, sigma_a=1.0, k=10, steps=3000, lr=0.1, wd=2e-3, n_probe=3000)
    ps = [0.0, 0.5, 0.7, 0.85, 1.0]
    res = lm.sweep(cfg, ps, seeds=[0], theory_grid=101)
    th, grid = res["theory"], torch.tensor(res["theory"]["p_grid"])
    idx = [int(torch.argmin((grid - p).abs())) for p in ps]
    lo = torch.minimum(torch.tensor(th["acc_B"]), torch.tensor(th["acc_B_whitened"]))[idx]
    hi = torch.maximum(torch.tensor(th["acc_B"]), torch.tensor(th["acc_B_whitened"]))[idx]
    sim = mean(res, "acc_B")
    assert ((sim > lo - 0.10) & (sim < hi + 0.10)).all(), (sim, lo, hi)
    t_lo, t_hi = sorted([th["transition"], th["transition_whitened"]])
    assert t_lo - 0.10 < res["transition_sim"] < t_hi + 0.10


def test_script_runs_and_writes_outputs(tmp_path):
    script = Path(lm.__file__)
    out = subprocess.run([sys.executable, str(script), "--steps", "20", "--seeds", "0", "--ps", "0", "1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| 0.00 |" in out.stdout
    res = json.loads((tmp_path / "results.json").read_text())
    assert torch.isfinite(torch.tensor(res["acc_A"])).all()
    assert (tmp_path / "figures" / "accuracy_vs_p.png").stat().st_size > 10_000
    assert (tmp_path / "results.csv").read_text().count("\n") == 3
