"""Overlays land where the reference puts them (checked against an independent Pillow rendering)."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from featdrop.data import overlays


def photos(n, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


def pil(img):
    return Image.fromarray(img.permute(1, 2, 0).numpy())


def arr(im):
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def test_shapes_match_pillow_rgba_drawing_of_the_reference():
    x = photos(24)
    out, labels = overlays.apply("shapes", x, gen())
    labels2, rgb = overlays.sample_shapes(24, gen())
    assert torch.equal(labels, labels2)
    third = 32 / 3
    for i in range(24):
        im = pil(x[i])
        draw = ImageDraw.Draw(im, "RGBA")
        fill = tuple(int(c) for c in rgb[i]) + (180,)
        box = [third, third, 2 * third, 2 * third]
        shape = overlays.SHAPES[int(labels[i])]
        if shape == "square":
            draw.rectangle(box, fill=fill)
        elif shape == "triangle":
            draw.polygon([(16, third), (third, 2 * third), (2 * third, 2 * third)], fill=fill)
        else:
            draw.ellipse(box, fill=fill)
        expected = arr(im).int()
        diff = (out[i].int() - expected).abs()
        assert diff.max() <= 1, (shape, diff.max())  # Pillow's integer blend rounds differently by ≤ 1
        changed = (expected != x[i].int()).any(0)
        rows, cols = torch.nonzero(changed, as_tuple=True)
        assert rows.min() >= 10 and rows.max() <= 21 and cols.min() >= 10 and cols.max() <= 21


def test_shapes_alpha_blend_and_untouched_outside():
    x = photos(30)
    out, labels = overlays.apply("shapes", x, gen(3))
    _, rgb = overlays.sample_shapes(30, gen(3))
    masks = overlays.shape_masks()
    assert masks.sum((1, 2)).tolist() == [144, 78, 112] or masks[0].sum() == 144  # Pillow 10+: square 12×12
    for i in range(30):
        m = masks[labels[i]].bool()
        assert torch.equal(out[i][:, ~m], x[i][:, ~m])
        a = 180 / 255
        expect = (x[i][:, m].double() * (1 - a) + rgb[i][:, None].double() * a).round()
        assert (out[i][:, m].double() - expect).abs().max() <= 1


def test_digits_four_copies_at_reference_corners():
    digits = torch.zeros(20, 28, 28, dtype=torch.uint8)
    for k in range(20):  # distinct blocky "digits" with exact zeros around them
        digits[k, 6:22, 8 + k % 4: 18 + k % 4] = 40 + 10 * k
    dlab = torch.arange(20) % 10
    x = photos(16)
    out, labels = overlays.apply("digits", x, gen(), digits=digits, digit_labels=dlab)
    labels2, chosen = overlays.sample_digits(16, gen(), dlab)
    assert torch.equal(labels, labels2) and torch.equal(dlab[chosen], labels)
    for i in range(16):
        small = np.asarray(Image.fromarray(digits[chosen[i]].numpy())
                           .resize((10, 10), Image.BICUBIC)).astype(int)
        expected = x[i].numpy().astype(int).copy()
        for y0 in (4, 16):
            for x0 in (4, 16):
                region = expected[:, y0:y0 + 10, x0:x0 + 10]
                region[:, small > 0] = small[small > 0]
        diff = np.abs(out[i].numpy().astype(int) - expected)
        # torch's antialiased bicubic and Pillow's differ by a few grey levels at edges
        assert diff.max() <= 6, diff.max()
        outside = np.ones((32, 32), bool)
        for y0 in (4, 16):
            for x0 in (4, 16):
                outside[y0:y0 + 10, x0:x0 + 10] = False
        assert np.array_equal(out[i].numpy()[:, outside], x[i].numpy()[:, outside])


def test_letters_match_pillow_text_with_dejavu():
    x = photos(26)
    out, labels = overlays.apply("letters", x, gen(5))
    labels2, rgb, offsets = overlays.sample_letters(26, gen(5))
    font = ImageFont.truetype(overlays.font_path(), 12)
    for i in range(26):
        im = pil(x[i])
        draw = ImageDraw.Draw(im)
        for q, ((x_lo, _), (y_lo, _)) in enumerate(overlays.LETTER_RANGES):
            anchor = (x_lo + int(offsets[q][0][i]), y_lo + int(offsets[q][1][i]))
            draw.text(anchor, overlays.LETTERS[int(labels[i])], fill=tuple(int(c) for c in rgb[i]), font=font)
        diff = (out[i].int() - arr(im).int()).abs()
        assert diff.max() <= 2, diff.max()
        assert (out[i] != x[i]).any()  # something was drawn


@pytest.mark.parametrize("name,k", [("shapes", 3), ("letters", 26)])
def test_labels_balanced_and_independent_of_class(name, k):
    n = 2600
    main = torch.arange(n) % 10
    _, alt = overlays.apply(name, photos(n), gen(7))
    counts = torch.bincount(alt, minlength=k)
    assert counts.max() - counts.min() <= 1
    # independence from the main label: every (main, alt) cell near n/(10k)
    table = torch.zeros(10, k)
    table.index_put_((main, alt), torch.ones(n), accumulate=True)
    expected = n / (10 * k)
    chi2 = ((table - expected) ** 2 / expected).sum().item()
    dof = 9 * (k - 1)
    assert chi2 < dof + 5 * (2 * dof) ** 0.5


@pytest.mark.parametrize("name", ["shapes", "letters", "digits"])
def test_deterministic_per_seed(name):
    digits = torch.randint(0, 256, (30, 28, 28), dtype=torch.uint8, generator=gen(0))
    kw = dict(digits=digits, digit_labels=torch.arange(30) % 10)
    a = overlays.apply(name, photos(40), gen(11), **kw)
    b = overlays.apply(name, photos(40), gen(11), **kw)
    c = overlays.apply(name, photos(40), gen(12), **kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_opacity_and_size_knobs():
    x = photos(12)
    full, _ = overlays.apply("shapes", x, gen())
    faint, _ = overlays.apply("shapes", x, gen(), opacity=0.25)
    d_full = (full.int() - x.int()).abs().sum()
    d_faint = (faint.int() - x.int()).abs().sum()
    assert 0.15 < d_faint / d_full < 0.35
    small = overlays.shape_masks(0.5).sum((1, 2))
    big = overlays.shape_masks(1.0).sum((1, 2))
    assert (small < big / 2).all()


def test_none_is_identity():
    x = photos(5)
    out, alt = overlays.apply("none", x, gen())
    assert torch.equal(out, x) and (alt == 0).all()


def test_unknown_overlay_lists_valid_names():
    with pytest.raises(ValueError) as err:
        overlays.apply("stripes", photos(2), gen())
    msg = str(err.value)
    assert "stripes" in msg and all(n in msg for n in ("none", "shapes", "digits", "letters"))
