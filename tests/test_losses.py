"""Losses against naive per-pair loops written from their formulas."""
import math

import pytest
import torch

from featdrop import losses


def cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def naive_nt_xent(z1, z2, tau, eps=0.0):
    z = torch.cat([z1, z2]).double()
    n2 = len(z)
    b = n2 // 2
    total = 0.0
    for i in range(n2):
        p = (i + b) % n2
        num = math.exp((cos(z[i], z[p]) - eps) / tau)
        den = num + sum(math.exp((cos(z[i], z[j]) + eps) / tau) for j in range(n2) if j not in (i, p))
        total += -math.log(num / den)
    return total / n2


def naive_reference(z1, z2, tau):
    b = len(z1)
    total = 0.0
    for i in range(b):
        terms = [cos(z1[i], z1[j]) / tau for j in range(b)] + [cos(z1[i], z2[j]) / tau for j in range(b)]
        m = max(terms)
        lse = m + math.log(sum(math.exp(t - m) for t in terms))
        total += -cos(z1[i], z2[i]) / tau + lse - math.log(2 * b)
    return total / b


@pytest.fixture
def z():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_nt_xent_matches_naive_loop(z, tau):
    assert losses.nt_xent(*z, tau).item() == pytest.approx(naive_nt_xent(*z, tau), rel=1e-4)


def test_nt_xent_is_symmetric_and_scale_invariant(z):
    a, b = z
    assert losses.nt_xent(a, b, 0.2).item() == pytest.approx(losses.nt_xent(b, a, 0.2).item(), rel=1e-6)
    assert losses.nt_xent(3 * a, b, 0.2).item() == pytest.approx(losses.nt_xent(a, b, 0.2).item(), rel=1e-5)


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_reference_variant_matches_its_formula(z, tau):
    assert losses.reference_simclr(*z, tau).item() == pytest.approx(naive_reference(*z, tau), rel=1e-4)


def test_reference_variant_differs_from_nt_xent(z):
    assert abs(losses.reference_simclr(*z, 0.5).item() - losses.nt_xent(*z, 0.5).item()) > 1e-3


def test_ifm_eps_zero_is_plain_simclr(z):
    assert (losses.ifm(*z, 0.2, epsilon=0.0, alpha=1.0).item()
            == pytest.approx(losses.nt_xent(*z, 0.2).item(), rel=1e-6))


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_ifm_matches_direct_computation(z, alpha):
    tau, eps = 0.2, 0.1
    expect = (naive_nt_xent(*z, tau) + alpha * naive_nt_xent(*z, tau, eps)) / (1 + alpha)
    assert losses.ifm(*z, tau, eps, alpha).item() == pytest.approx(expect, rel=1e-4)
    assert losses.ifm(*z, tau, eps, alpha).item() > losses.nt_xent(*z, tau).item()  # ε makes it harder
