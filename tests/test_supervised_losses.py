"""Supervised losses of "Perfectly Balanced" (SupCon, class-conditional InfoNCE, spread, the
autoencoder's heads) against naive per-anchor loops and closed forms."""
import math

import pytest
import torch

from featdrop import losses
from featdrop.losses import reconstruction_loss
from featdrop.models import Decoder


def cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def directions(z1, z2):
    """(anchor view, other view) pairs: σ is computed across the views only, both ways."""
    return [(z1.double(), z2.double()), (z2.double(), z1.double())]


def naive_supcon(z1, z2, y, tau):
    total, n = 0.0, 0
    for A, O in directions(z1, z2):
        for i in range(len(A)):
            s = [cos(A[i], O[j]) / tau for j in range(len(O))]
            P = [j for j in range(len(O)) if y[j] == y[i]]
            N = [j for j in range(len(O)) if y[j] != y[i]]
            neg = sum(math.exp(s[k]) for k in N)
            total += sum(-s[p] + math.log(math.exp(s[p]) + neg) for p in P) / len(P)
            n += 1
    return total / n


def naive_cnce(z1, z2, y, tau):
    total, n = 0.0, 0
    for A, O in directions(z1, z2):
        for i in range(len(A)):
            s = [cos(A[i], O[j]) / tau for j in range(len(O))]
            total += -s[i] + math.log(sum(math.exp(s[p]) for p in range(len(O)) if y[p] == y[i]))
            n += 1
    return total / n


def naive_cross_view_infonce(z1, z2, tau):
    """−σᵢᵢ′ + log Σⱼ e^{σᵢⱼ} over the other view only, both directions, mean."""
    total, n = 0.0, 0
    for A, O in directions(z1, z2):
        for i in range(len(A)):
            s = [cos(A[i], O[j]) / tau for j in range(len(O))]
            total += -s[i] + math.log(sum(math.exp(v) for v in s))
            n += 1
    return total / n


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(10, 6, generator=g), torch.randn(10, 6, generator=g)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 0, 1])  # repeats, and a singleton class (3)
    return z1, z2, y


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_supcon_matches_naive_loop(batch, tau):
    assert losses.supcon(*batch, tau).item() == pytest.approx(naive_supcon(*batch, tau), rel=1e-5)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_class_conditional_nce_matches_naive_loop(batch, tau):
    assert losses.class_conditional_nce(*batch, tau).item() == pytest.approx(naive_cnce(*batch, tau),
                                                                             rel=1e-5)


def test_default_temperature_is_thanos_half(batch):
    assert losses.supcon(*batch).item() == pytest.approx(naive_supcon(*batch, 0.5), rel=1e-5)
    assert losses.class_conditional_nce(*batch).item() == pytest.approx(naive_cnce(*batch, 0.5), rel=1e-5)


@pytest.mark.parametrize("fn,naive", [(losses.supcon, naive_supcon),
                                      (losses.class_conditional_nce, naive_cnce)])
def test_bf16_inputs_are_computed_in_float32(batch, fn, naive):
    z1, z2, y = batch
    h1, h2 = z1.bfloat16(), z2.bfloat16()
    out = fn(h1, h2, y, 0.5)
    assert out.dtype == torch.float32
    # exact on rounded inputs
    assert out.item() == pytest.approx(naive(h1.float(), h2.float(), y, 0.5), rel=1e-5)
    # and close to fp32
    assert out.item() == pytest.approx(fn(z1, z2, y, 0.5).item(), rel=2e-2)


def test_spread_interpolates_supcon_and_cnce(batch):
    sc, nce = losses.supcon(*batch, 0.3).item(), losses.class_conditional_nce(*batch, 0.3).item()
    assert losses.spread(*batch, 0.3, alpha=0.0).item() == pytest.approx(sc, rel=1e-6)
    assert losses.spread(*batch, 0.3, alpha=1.0).item() == pytest.approx(nce, rel=1e-6)
    # default α = 0.5
    assert losses.spread(*batch, 0.3).item() == pytest.approx(0.5 * sc + 0.5 * nce, rel=1e-6)
    assert abs(sc - nce) > 1e-2  # the two endpoints really differ


@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_distinct_labels_supcon_is_cross_view_infonce_and_cnce_is_zero(batch, tau):
    z1, z2, _ = batch
    y = torch.arange(len(z1))  # P(i) = {i′}: no other same-class item
    assert losses.supcon(z1, z2, y, tau).item() == pytest.approx(naive_cross_view_infonce(z1, z2, tau),
                                                                 rel=1e-5)
    assert losses.class_conditional_nce(z1, z2, y, tau).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_one_class_cnce_is_cross_view_infonce_and_supcon_is_zero(batch, tau):
    z1, z2, _ = batch
    y = torch.zeros(len(z1), dtype=torch.long)  # P(i) is the whole other view, N(i) is empty
    assert losses.class_conditional_nce(z1, z2, y, tau).item() == pytest.approx(
        naive_cross_view_infonce(z1, z2, tau), rel=1e-5)
    z1 = z1.clone().requires_grad_()
    sc = losses.supcon(z1, z2, y, tau)
    sc.backward()
    assert sc.item() == 0.0 and torch.isfinite(z1.grad).all()  # −σ + log e^σ, with no NaN from an empty N


def test_closed_forms_show_supcon_collapses_and_cnce_spreads():
    """Identical views, unit vectors. Collapsed: class c sits on e_c (orthonormal classes, k_c items), so
    σ = 1/τ on P and 0 on N: L_SC(i) = log(1 + (B − k)e^{−1/τ}), L_cNCE(i) = log k. Spread: every item on
    its own eⱼ: L_SC(i) = [log(1 + (B − k)e^{−1/τ}) + (k − 1)·log(1 + B − k)]/k,
    L_cNCE(i) = log(1 + (k − 1)e^{−1/τ})."""
    tau, y = 0.5, torch.tensor([0, 0, 0, 1, 1, 2])
    B, k = len(y), torch.bincount(y)[y].double()              # k: each anchor's class size
    collapsed, spread_out = torch.eye(8)[y], torch.eye(8)[:B]
    e = math.exp(-1 / tau)
    sc_collapsed = torch.log1p((B - k) * e).mean().item()
    sc_spread = ((torch.log1p((B - k) * e) + (k - 1) * torch.log1p(B - k)) / k).mean().item()
    nce_collapsed, nce_spread = torch.log(k).mean().item(), torch.log1p((k - 1) * e).mean().item()
    assert losses.supcon(collapsed, collapsed, y, tau).item() == pytest.approx(sc_collapsed, rel=1e-5)
    assert losses.supcon(spread_out, spread_out, y, tau).item() == pytest.approx(sc_spread, rel=1e-5)
    assert losses.class_conditional_nce(collapsed, collapsed, y, tau).item() == pytest.approx(nce_collapsed,
                                                                                              rel=1e-5)
    assert losses.class_conditional_nce(spread_out, spread_out, y, tau).item() == pytest.approx(nce_spread,
                                                                                                rel=1e-5)
    assert sc_collapsed < sc_spread and nce_spread < nce_collapsed  # the class-collapse tension


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fn", [losses.supcon, losses.class_conditional_nce, losses.spread])
def test_gradients_are_finite(batch, fn, dtype):
    z1, z2, y = batch
    z1, z2 = z1.to(dtype).requires_grad_(), z2.to(dtype).requires_grad_()
    fn(z1, z2, y, 0.1).backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all() and z1.grad.abs().sum() > 0


def test_smoothed_cross_entropy_by_hand():
    logits, y, eps = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]), torch.tensor([0, 2]), 0.1
    expect = 0.0
    for row, label in zip(logits.tolist(), y.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        q = [eps / 3 + (1 - eps) * (c == label) for c in range(3)]  # (1 − ε)·one-hot + ε/K
        expect += -sum(qc * (v - log_z) for qc, v in zip(q, row)) / len(y)
    assert losses.smoothed_cross_entropy(logits, y).item() == pytest.approx(expect, rel=1e-6)
    assert losses.smoothed_cross_entropy(logits, y, 0.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-6)


def test_reconstruction_loss_is_zero_only_for_a_perfect_decoder():
    target = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert reconstruction_loss(target.clone(), target).item() == 0.0
    off = target.clone()
    off[0, 1, 5, 7] += 0.5                                    # one pixel wrong by 0.5
    assert reconstruction_loss(off, target).item() == pytest.approx(0.25 / target.numel(), rel=1e-5)


def test_a_decoder_set_to_the_target_colour_reconstructs_it_exactly():
    dec = Decoder(256)
    colour = torch.tensor([0.2, -0.4, 1.3])
    with torch.no_grad():
        dec.net[-1].weight.zero_()
        dec.net[-1].bias.copy_(colour)                      # output = constant colour, whatever the features
    target = colour[None, :, None, None].expand(5, 3, 32, 32)
    out = dec(torch.randn(5, 256))
    assert reconstruction_loss(out, target).item() == pytest.approx(0.0, abs=1e-12)
    assert reconstruction_loss(out, target + 0.1).item() == pytest.approx(0.01, rel=1e-4)


@pytest.mark.parametrize("d", [256, 512])
def test_decoder_shape_and_finite_gradients(d):
    dec = Decoder(d)
    h = torch.randn(4, d, requires_grad=True)
    out = dec(h)
    assert out.shape == (4, 3, 32, 32)
    reconstruction_loss(out, torch.rand(4, 3, 32, 32)).backward()
    assert torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in dec.parameters())


def test_decoder_other_channels_and_sizes():
    assert Decoder(64, out_channels=1, size=64)(torch.randn(2, 64)).shape == (2, 1, 64, 64)
    with pytest.raises(ValueError):
        Decoder(64, size=30)
