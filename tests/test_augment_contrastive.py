"""The aug+ augmentations: each batched operation against torchvision image by image, the crop's geometry on a
ramp, per-image parameters, reproducibility from the generator, the 1-channel variant and the value range."""

import pytest
import torch

from weakdml.compat import import_torchvision
from weakdml.data.augment import random_boxes
from weakdml.data.augment_contrastive import (
    CROP_SCALE,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    aug_plus,
    colour_jitter,
    gaussian_blur,
)
from weakdml.errors import UserError

import_torchvision()
from torchvision.transforms.v2 import functional as TF


def _images(b=6, c=3, size=16, seed=0):
    return torch.randint(0, 256, (b, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ours, theirs, low, high", [
    (adjust_brightness, TF.adjust_brightness, 0.6, 1.4),
    (adjust_contrast, TF.adjust_contrast, 0.6, 1.4),
    (adjust_saturation, TF.adjust_saturation, 0.6, 1.4),
    (adjust_hue, TF.adjust_hue, -0.1, 0.1),
])
def test_colour_operations_equal_torchvision_per_image(ours, theirs, low, high):
    x = _images().float() / 255
    factors = torch.linspace(low, high, len(x))
    out = ours(x, factors)
    for i in range(len(x)):
        torch.testing.assert_close(out[i], theirs(x[i], factors[i].item()), atol=1e-5, rtol=0)


def test_blur_equals_torchvision_per_image():
    x = _images(c=1).float() / 255
    sigma = torch.linspace(0.1, 2.0, len(x))
    out = gaussian_blur(x, sigma, 5)
    for i in range(len(x)):
        torch.testing.assert_close(out[i], TF.gaussian_blur(x[i], [5, 5], [sigma[i].item()] * 2), atol=1e-5, rtol=0)


def test_crop_boxes_follow_the_rules_and_differ_per_image():
    boxes = random_boxes(500, 20, 30, torch.Generator().manual_seed(1), CROP_SCALE)
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 20).all() and (left + w <= 30).all()
    area = h * w / 600
    assert area.min() >= 0.2 - 0.05 and area.max() <= 1.0
    assert (w / h).min() >= 3 / 4 - 0.15 and (w / h).max() <= 4 / 3 + 0.15  # rounding to whole pixels
    assert len(set(map(tuple, boxes.tolist()))) > 400  # different images, different crops


def test_jitter_draws_per_image_factors_and_order():
    x = torch.full((64, 3, 4, 4), 0.5)
    x[:, 0] = 0.8  # a coloured image, the same for every row
    out = colour_jitter(x, torch.Generator().manual_seed(0))
    assert len(torch.unique(out.flatten(1), dim=0)) == 64


@pytest.mark.parametrize("channels", [1, 3])
def test_aug_plus_is_reproducible_in_range_and_per_image(channels):
    images = _images(b=8, c=channels, size=16).repeat(2, 1, 1, 1)  # every image twice
    state = torch.random.get_rng_state()
    a = aug_plus(images, torch.Generator().manual_seed(3), size=12)
    b = aug_plus(images, torch.Generator().manual_seed(3), size=12)
    assert torch.equal(torch.random.get_rng_state(), state)  # every draw comes from the generator
    assert torch.equal(a, b) and a.shape == (16, channels, 12, 12) and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, aug_plus(images, torch.Generator().manual_seed(4), size=12))
    assert all(not torch.allclose(a[i], a[i + 8]) for i in range(8))  # the same image gets different views


def test_aug_plus_grayscale_only_for_colour():
    images = _images(b=200, c=3, size=8)
    out = aug_plus(images, torch.Generator().manual_seed(0))
    gray = ((out[:, 0] == out[:, 1]) & (out[:, 1] == out[:, 2])).flatten(1).all(1).float().mean()
    assert 0.1 < gray < 0.3  # p 0.2
    with pytest.raises(UserError, match="1- or 3-channel"):
        aug_plus(_images(c=4), torch.Generator())
