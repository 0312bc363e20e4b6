"""Expert views: per-sample randomness, shapes and ranges, agreement with torchvision's ops."""
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from featdrop import views


def test_samples_in_one_batch_get_different_parameters():
    x = torch.rand(1, 3, 32, 32).expand(64, 3, 32, 32).contiguous()  # one image, 64 times
    v = views.expert_views(x, torch.Generator().manual_seed(0))
    assert v.shape == x.shape and v.dtype == x.dtype
    assert v.min() >= 0 and v.max() <= 1
    flat = v.flatten(1)
    dist = torch.cdist(flat, flat) + torch.eye(64) * 1e9
    assert dist.min() > 1e-3  # no two samples got the same view


def test_same_generator_seed_repeats_views():
    x = torch.rand(8, 3, 32, 32)
    a = views.expert_views(x, torch.Generator().manual_seed(5))
    b = views.expert_views(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_grayscale_probability_per_sample():
    x = torch.rand(2000, 3, 8, 8)
    v = views.expert_views(x, torch.Generator().manual_seed(1), jitter_p=0, blur_p=0, gray_p=0.2)
    gray = ((v[:, 0] - v[:, 1]).abs().amax((1, 2)) < 1e-6).float().mean().item()
    assert 0.17 < gray < 0.23


def test_crop_areas_follow_the_scale_range():
    # A bright square marks a region; its visible area fraction shrinks as the crop zooms in.
    x = torch.zeros(1000, 3, 32, 32)
    v = views.crop_flip(x + torch.linspace(0, 1, 32)[None, None, None, :], torch.Generator().manual_seed(2))
    # a horizontal ramp: the range of values seen in a view is the crop's width fraction (up to flips)
    width = (v[:, 0].amax((1, 2)) - v[:, 0].amin((1, 2)))
    assert width.min() > 0.15 and width.max() <= 1.0 + 1e-5
    assert width.std() > 0.1  # varied across the batch


def test_hue_and_blur_match_torchvision():
    x = torch.rand(6, 3, 16, 16)
    h = torch.linspace(-0.1, 0.1, 6)
    ours = views.shift_hue(x, h)
    ref = torch.stack([TF.adjust_hue(x[i], float(h[i])) for i in range(6)])
    assert torch.allclose(ours, ref, atol=1e-5)
    sig = torch.tensor([0.5, 1.0, 2.0])
    blurred = views.gaussian_blur(x[:3], sig)
    ref = torch.stack([TF.gaussian_blur(x[i], [13, 13], [float(sig[i])] * 2) for i in range(3)])
    assert torch.allclose(blurred, ref, atol=1e-5)


def test_normalize_uses_cifar_statistics():
    x = torch.tensor(views.CIFAR_MEAN)[None, :, None, None].expand(1, 3, 4, 4)
    assert torch.allclose(views.normalize(x), torch.zeros(1, 3, 4, 4), atol=1e-6)
