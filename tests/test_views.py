"""Expert views: per-sample randomness, shapes and ranges, agreement with torchvision's ops."""
import torch
import torchvision.transforms.v2.functional as TF

from featdrop.views import expert as views


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


def test_crop_matrices_equal_grid_sample_and_follow_the_scale_range():
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(2)
    x0, y0, w, h = views.crop_params(1000, g, "cpu")
    area = w * h
    assert area.min() >= 0.2 - 1e-6 and area.max() <= 1 + 1e-6 and area.std() > 0.15
    assert (x0 >= 0).all() and (x0 + w <= 1 + 1e-6).all() and (y0 + h <= 1 + 1e-6).all()
    n = 16
    flip = torch.arange(n) % 2 == 0
    x = torch.rand(n, 3, 32, 32)
    ours = views.apply_maps(x, views.interp_matrix(y0[:n], h[:n], 32),
                            views.interp_matrix(x0[:n], w[:n], 32, flip),
                            torch.eye(3).expand(n, 3, 3), torch.zeros(n, 3))
    sign = torch.where(flip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w[:n] * sign, 2 * (x0[:n] + w[:n] / 2) - 1
    theta[:, 1, 1], theta[:, 1, 2] = h[:n], 2 * (y0[:n] + h[:n] / 2) - 1
    ref = F.grid_sample(x, F.affine_grid(theta, [n, 3, 32, 32], align_corners=False), align_corners=False,
                        padding_mode="border")
    assert torch.allclose(ours, ref, atol=1e-5)


def test_blur_matrix_matches_torchvision():
    x = torch.rand(3, 3, 16, 16)
    sig = torch.tensor([0.5, 1.0, 2.0])
    ours = views.apply_maps(x, views.blur_matrix(sig, 16), views.blur_matrix(sig, 16),
                            torch.eye(3).expand(3, 3, 3), torch.zeros(3, 3))
    ref = torch.stack([TF.gaussian_blur(x[i], [13, 13], [float(sig[i])] * 2) for i in range(3)])
    assert torch.allclose(ours, ref, atol=1e-5)


def _single_op(x, seed, **ranges):
    """Run jitter_affine with only one op active; return (view, the factors it drew)."""
    g = torch.Generator().manual_seed(seed)
    n = len(x)
    A, t = views.jitter_affine(x.mean(dim=(2, 3)), g, p=1.0, **ranges)
    g = torch.Generator().manual_seed(seed)  # replay the draws: b, c, s, hue factors, in that order
    f = [torch.rand(n, generator=g) for _ in range(4)]
    out = (A @ x.flatten(2)).view_as(x) + t[:, :, None, None]
    return out, f


def test_brightness_contrast_saturation_equal_torchvision_ops():
    x = torch.rand(6, 3, 8, 8) * 0.3 + 0.35  # mid-range: no clamping for factors in [0.6, 1.4]
    out, f = _single_op(x, 0, b=0.4, c=0.0, s=0.0, hue=0.0)
    ref = torch.stack([TF.adjust_brightness(x[i], 0.6 + 0.8 * float(f[0][i])) for i in range(6)])
    assert torch.allclose(out, ref, atol=1e-5)
    out, f = _single_op(x, 1, b=0.0, c=0.4, s=0.0, hue=0.0)
    ref = torch.stack([TF.adjust_contrast(x[i], 0.6 + 0.8 * float(f[1][i])) for i in range(6)])
    assert torch.allclose(out, ref, atol=1e-5)
    out, f = _single_op(x, 2, b=0.0, c=0.0, s=0.4, hue=0.0)
    ref = torch.stack([TF.adjust_saturation(x[i], 0.6 + 0.8 * float(f[2][i])) for i in range(6)])
    assert torch.allclose(out, ref, atol=1e-5)


def test_hue_rotation_is_a_rotation_about_grey_and_tracks_hsv_hue_shift():
    h = torch.linspace(-0.1, 0.1, 9)
    H = views.hue_matrix(h)
    assert torch.allclose(H @ H.transpose(1, 2), torch.eye(3).expand(9, 3, 3), atol=1e-5)  # orthogonal
    assert torch.allclose(H @ torch.ones(3), torch.ones(9, 3), atol=1e-6)                  # grey stays grey
    assert torch.allclose(views.hue_matrix(torch.tensor([0.0]))[0], torch.eye(3), atol=1e-6)
    x = torch.rand(9, 3, 16, 16)
    out = (H @ x.flatten(2)).view_as(x).clamp(0, 1)
    ref = torch.stack([TF.adjust_hue(x[i], float(h[i])) for i in range(9)])
    # closer to torchvision's HSV shift than leaving the hue alone (measured: 0.041 vs 0.056)
    assert (out - ref).abs().mean() < 0.85 * (x - ref).abs().mean()


def test_normalize_uses_cifar_statistics():
    x = torch.tensor(views.CIFAR_MEAN)[None, :, None, None].expand(1, 3, 4, 4)
    assert torch.allclose(views.normalize(x), torch.zeros(1, 3, 4, 4), atol=1e-6)


def test_normalized_uint8_path_equals_normalize_of_the_plain_view():
    raw = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(4))
    fused = views.expert_views(raw.float(), torch.Generator().manual_seed(9), in_scale=1 / 255,
                               normalized=True)
    plain = views.normalize(views.expert_views(raw.float() / 255, torch.Generator().manual_seed(9)))
    assert torch.allclose(fused, plain, atol=1e-4)
