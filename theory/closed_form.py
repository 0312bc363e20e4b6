"""The spectral closed form of the linear model (derivation: theory/spectral.md).

In the spectral contrastive loss (HaoChen et al. 2021) the optimal linear representation spans the top-k
eigenvectors of the cross-view covariance, in which feature dropout scales the dropped block by (1 − p). So
v-direction j enters the representation at p*_j = 1 − β²λ_v,j / (α²λ_u,(k−j+1)). ``whiten=True`` is the exact
optimum of HaoChen's loss, the same computation on Σ^{-1/2} C Σ^{-1/2}.
"""
import math

import torch

from .simulation import DT, Setting, probe


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
        return scale ** 2 * (c.T @ c / protos.shape[0]
                             + cfg.s ** 2 / protos.shape[1] * torch.eye(protos.shape[1], dtype=DT))
    Cu, Cv = cov(mu, cfg.alpha), cov(nu, cfg.beta)
    C = torch.block_diag(Cu, Cv, torch.zeros(cfg.dn, cfg.dn, dtype=DT))  # nuisance: resampled, no cross term
    Sigma = (torch.block_diag(Cu, Cv, cfg.sigma_n ** 2 * torch.eye(cfg.dn, dtype=DT))
             + cfg.sigma_a ** 2 * torch.eye(C.shape[0], dtype=DT))
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
    """Probe accuracies (2, len(ps), S) of the spectral optimum's representation, on the simulation's probe
    data."""
    W = torch.stack([torch.stack([_pad(topk_space(cross_view_matrix(cfg, mu, nu, p, whiten), cfg.k), cfg.k)
                                  for (mu, nu, _) in worlds]) for p in ps])
    return torch.stack(probe(cfg, W, worlds, seeds))


def _pad(V, k):  # zero rows keep the stack rectangular; the probe ignores them
    return torch.cat([V, torch.zeros(k - V.shape[0], V.shape[1], dtype=DT)])
