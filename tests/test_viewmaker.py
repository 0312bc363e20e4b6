"""The viewmaker's L1-sphere budget and its adversarial step."""
import pytest
import torch

from featdrop import losses
from featdrop.models import ConvNet
from featdrop.views.viewmaker import Viewmaker


@pytest.mark.parametrize("budget,channels,size", [(0.05, 3, 32), (0.1, 3, 32), (0.125, 1, 64)])
def test_mean_abs_perturbation_equals_budget(budget, channels, size):
    torch.manual_seed(0)
    vm = Viewmaker(channels, budget, width=8)
    x = torch.rand(5, channels, size, size)
    delta = vm.perturbation(x, torch.Generator().manual_seed(1))
    per_example = delta.abs().mean(dim=(1, 2, 3))
    # δ = ε·d/(mean|d| + 1e-4): exact up to the reference's 1e-4 stabiliser
    assert torch.allclose(per_example, torch.full((5,), budget), rtol=2e-3)
    view = vm(x, torch.Generator().manual_seed(1))
    assert torch.allclose(view - x, delta, atol=1e-6)


def test_noise_makes_views_differ_and_generator_repeats_them():
    torch.manual_seed(0)
    vm = Viewmaker(3, 0.05, width=8)
    x = torch.rand(2, 3, 32, 32)
    a = vm(x, torch.Generator().manual_seed(3))
    b = vm(x, torch.Generator().manual_seed(3))
    c = vm(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_clamp_keeps_views_in_range():
    torch.manual_seed(0)
    vm = Viewmaker(3, 0.5, width=8, clamp=(0.0, 1.0))
    v = vm(torch.rand(4, 3, 32, 32))
    assert v.min() >= 0 and v.max() <= 1


def test_viewmaker_step_raises_the_loss_and_leaves_the_encoder_alone():
    torch.manual_seed(0)
    enc, vm = ConvNet(widths=(8, 16, 16, 32)), Viewmaker(3, 0.5, width=8)
    x = torch.rand(32, 3, 32, 32)
    opt = torch.optim.Adam(vm.parameters(), lr=3e-2)

    def loss():
        v1, v2 = vm(x, torch.Generator().manual_seed(0)), vm(x, torch.Generator().manual_seed(1))
        return losses.nt_xent(enc(v1), enc(v2), 0.1)

    enc.train()  # batch statistics: a fresh encoder in eval mode maps everything to one point
    before_enc = [p.clone() for p in enc.parameters()]
    before_vm = [p.clone() for p in vm.parameters()]
    l0 = loss().item()
    for _ in range(10):
        enc.requires_grad_(False)
        opt.zero_grad()
        (-loss()).backward()
        opt.step()
    l1 = loss().item()
    assert l1 > l0 + 0.05, (l0, l1)
    assert all(torch.equal(a, b) for a, b in zip(before_enc, enc.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_vm, vm.parameters()))
