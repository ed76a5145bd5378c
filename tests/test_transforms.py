"""Tensor augmentations: batched ops against per-sample loops and hand computations."""

from __future__ import annotations

import pytest
import torch

from adabatch.data.transforms import (
    CHANNEL_STATS,
    CIFAR10_MEAN,
    CIFAR10_STD,
    Augment,
    cifar_train_augment,
    crop,
    crop_offsets,
    flip_mask,
    normalize,
    random_crop,
    random_horizontal_flip,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 16, c: int = 3, h: int = 8, w: int = 10) -> torch.Tensor:
    # Distinct values everywhere, so any misplaced pixel shows.
    return torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w)


def reference_pad(x: torch.Tensor, padding: int, fill: float) -> torch.Tensor:
    n, c, h, w = x.shape
    out = torch.full((n, c, h + 2 * padding, w + 2 * padding), fill)
    out[:, :, padding : padding + h, padding : padding + w] = x
    return out


# --- crop -------------------------------------------------------------------------------------


def test_crop_without_padding_at_full_size_is_identity() -> None:
    x = images()
    assert torch.equal(random_crop(x, (8, 10), padding=0, generator=gen()), x)
    assert torch.equal(random_crop(x[3], (8, 10), padding=0, generator=gen()), x[3])


@pytest.mark.parametrize(("size", "padding", "fill"), [(8, 4, 0.0), ((6, 7), 2, -3.5), (5, 0, 0.0)])
def test_batched_crop_matches_per_sample_loop(size, padding, fill) -> None:
    x = images()
    out = random_crop(x, size, padding, generator=gen(7), fill=fill)
    padded = reference_pad(x, padding, fill)
    h, w = (size, size) if isinstance(size, int) else size
    # The documented draws: tops, then lefts, on the padded size.
    top, left = crop_offsets(len(x), padded.shape[2], padded.shape[3], size, generator=gen(7))
    expected = torch.stack(
        [padded[i, :, t : t + h, s : s + w] for i, (t, s) in enumerate(zip(top, left, strict=True))]
    )
    assert out.shape == (16, 3, h, w)
    assert torch.equal(out, expected)


def test_crop_offsets_are_per_sample_and_cover_the_range() -> None:
    top, left = crop_offsets(4000, 40, 40, 32, generator=gen())
    for offsets in (top, left):
        assert int(offsets.min()) == 0 and int(offsets.max()) == 8
        counts = torch.bincount(offsets, minlength=9).float()
        assert (counts - 4000 / 9).abs().max() < 100  # uniform on {0, ..., 8}
    assert not torch.equal(top, left)
    # The documented draws: tops first, then lefts, each one torch.randint call.
    g = gen(2)
    expected_top = torch.randint(5, (10,), generator=g)
    expected_left = torch.randint(3, (10,), generator=g)
    top, left = crop_offsets(10, 12, 12, (8, 10), generator=gen(2))
    assert torch.equal(top, expected_top) and torch.equal(left, expected_left)


def test_padding_border_holds_the_fill_value() -> None:
    x = torch.rand(64, 3, 8, 8) + 1.0  # all > 1, so fill -1 is unambiguous
    out = random_crop(x, 8, padding=3, generator=gen(1), fill=-1.0)
    top, left = crop_offsets(64, 14, 14, 8, generator=gen(1))
    rows = torch.arange(8)
    for i in range(64):
        # Pixel (r, c) of the crop is padding iff it falls outside [3, 11) in padded coords.
        r_pad = (top[i] + rows < 3) | (top[i] + rows >= 11)
        c_pad = (left[i] + rows < 3) | (left[i] + rows >= 11)
        border = r_pad[:, None] | c_pad[None, :]
        assert (out[i][:, border] == -1.0).all()
        assert (out[i][:, ~border] > 1.0).all()


def test_crop_single_image_equals_batch_of_one() -> None:
    x = images(1)
    assert torch.equal(
        random_crop(x[0], 6, 2, generator=gen(3)), random_crop(x, 6, 2, generator=gen(3))[0]
    )


def test_crop_is_deterministic_and_uses_the_global_rng_by_default() -> None:
    x = images()
    assert torch.equal(random_crop(x, 8, generator=gen(5)), random_crop(x, 8, generator=gen(5)))
    assert not torch.equal(random_crop(x, 8, generator=gen(5)), random_crop(x, 8, generator=gen(6)))
    torch.manual_seed(11)
    a = random_crop(x, 8)
    torch.manual_seed(11)
    assert torch.equal(a, random_crop(x, 8))


def test_crop_by_explicit_offsets() -> None:
    x = images(2, 1, 4, 4)
    out = crop(x, torch.tensor([0, 2]), torch.tensor([1, 0]), 2)
    assert torch.equal(out[0, 0], torch.tensor([[1.0, 2.0], [5.0, 6.0]]))
    assert torch.equal(out[1, 0], torch.tensor([[24.0, 25.0], [28.0, 29.0]]))


def test_crop_keeps_integer_dtype() -> None:
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    out = random_crop(x, 8, 4, generator=gen())
    assert out.dtype == torch.uint8


def test_crop_errors() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        random_crop(images(), 20, padding=2)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        random_crop(images(), 8, padding=-1)
    with pytest.raises(ValueError, match="C × H × W or a batch"):
        random_crop(torch.zeros(8, 8), 8)
    with pytest.raises(ValueError, match="size must be positive"):
        random_crop(images(), 0)


# --- flip -------------------------------------------------------------------------------------


def test_flip_equals_torch_flip_on_the_chosen_samples() -> None:
    x = images(200)
    out = random_horizontal_flip(x, 0.3, generator=gen(4))
    mask = torch.rand(200, generator=gen(4)) < 0.3  # the documented single draw
    assert torch.equal(mask, flip_mask(200, 0.3, generator=gen(4)))
    for i in range(200):
        assert torch.equal(out[i], torch.flip(x[i], [-1]) if mask[i] else x[i])
    assert 30 <= int(mask.sum()) <= 90


def test_flip_extremes_and_single_image() -> None:
    x = images(8)
    assert torch.equal(random_horizontal_flip(x, 0.0, generator=gen()), x)
    assert torch.equal(random_horizontal_flip(x, 1.0, generator=gen()), x.flip(-1))
    single = random_horizontal_flip(x[0], 1.0)
    assert torch.equal(single, x[0].flip(-1))


def test_flip_errors() -> None:
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        random_horizontal_flip(images(), 1.5)


# --- normalize --------------------------------------------------------------------------------


def test_normalize_matches_hand_computation() -> None:
    x = torch.stack([torch.full((2, 2), 0.5), torch.full((2, 2), 0.2), torch.full((2, 2), 1.0)])
    out = normalize(x, (0.5, 0.4, 0.2), (0.25, 0.1, 0.4))
    # (0.5-0.5)/0.25 = 0, (0.2-0.4)/0.1 = -2, (1-0.2)/0.4 = 2
    assert torch.allclose(out[:, 0, 0], torch.tensor([0.0, -2.0, 2.0]))
    batch = normalize(x.expand(5, 3, 2, 2), (0.5, 0.4, 0.2), (0.25, 0.1, 0.4))
    assert torch.allclose(batch, out.expand(5, 3, 2, 2))
    assert torch.allclose(normalize(x, torch.tensor([0.5, 0.4, 0.2]), [0.25, 0.1, 0.4]), out)


def test_normalize_errors() -> None:
    x = torch.rand(3, 4, 4)
    with pytest.raises(ValueError, match="3 channels, got 1 means and 1 stds"):
        normalize(x, (0.1,), (0.3,))
    with pytest.raises(ValueError, match="std must be > 0"):
        normalize(x, (0.1, 0.1, 0.1), (0.3, 0.0, 0.3))
    with pytest.raises(TypeError, match=r"x.float\(\) / 255"):
        normalize(torch.zeros(3, 4, 4, dtype=torch.uint8), (0.1,) * 3, (0.3,) * 3)


def test_channel_stats_shapes() -> None:
    for name, (mean, std) in CHANNEL_STATS.items():
        channels = 1 if "mnist" in name else 3
        assert len(mean) == len(std) == channels
        assert all(0 < m < 1 for m in mean) and all(0 < s < 0.5 for s in std)


# --- pipeline ---------------------------------------------------------------------------------


def test_augment_applies_crop_flip_normalize_in_order_with_one_generator() -> None:
    x = torch.rand(32, 3, 8, 8)
    aug = Augment(crop_size=8, padding=2, flip_p=0.5, mean=(0.5,) * 3, std=(0.2,) * 3)
    g = gen(9)
    expected = normalize(
        random_horizontal_flip(random_crop(x, 8, 2, generator=g), 0.5, generator=g),
        (0.5,) * 3,
        (0.2,) * 3,
    )
    assert torch.equal(aug(x, generator=gen(9)), expected)


def test_cifar_train_augment_reproduces_the_recipe() -> None:
    aug = cifar_train_augment(CIFAR10_MEAN, CIFAR10_STD)
    assert (aug.crop_size, aug.padding, aug.fill, aug.flip_p) == (32, 4, 0.0, 0.5)
    x = torch.rand(64, 3, 32, 32)
    out = aug(x, generator=gen())
    assert out.shape == x.shape
    # Padding is black before normalisation, so padded pixels read (0 - mean) / std. Samples
    # cropped at top offset 8 end with 4 padding rows (flips do not move rows).
    border = torch.tensor([-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD, strict=True)])
    top, _ = crop_offsets(64, 40, 40, 32, generator=gen())
    bottom = (top == 8).nonzero().squeeze(1)
    assert len(bottom) > 0
    expected = border.view(1, 3, 1, 1).expand(len(bottom), 3, 4, 32)
    assert torch.allclose(out[bottom, :, -4:, :], expected)
    inner = out[bottom, :, :-4, :] * torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert (inner + torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1) >= -1e-6).all()


def test_augment_validation() -> None:
    with pytest.raises(ValueError, match="both mean and std"):
        Augment(mean=(0.5,))
    with pytest.raises(ValueError, match="flip_p must be in"):
        Augment(flip_p=2.0)
    with pytest.raises(ValueError, match="1 means and 3 stds"):
        Augment(mean=(0.5,), std=(0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="std must be > 0"):
        Augment(mean=(0.5,), std=(-1.0,))
    assert torch.equal(Augment()(images()), images())
