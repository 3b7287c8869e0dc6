"""Batched augmentation against a per-image reference, cutout's squares, and reproducibility from the generator
(leaving torch's global random state alone)."""

import torch
import torch.nn.functional as F

from weakdml.compat import import_torchvision
from weakdml.data.augment import augment, rand_augment, random_crop_flip, random_erase, random_flip

import_torchvision()


def test_crop_flip_equals_per_image_reference():
    images = torch.randint(0, 256, (9, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    out = random_crop_flip(images, flip=True, generator=torch.Generator().manual_seed(0))
    # replay the same random draws, one image at a time
    g = torch.Generator().manual_seed(0)
    pad = 2
    dy = torch.randint(0, 2 * pad + 1, (9,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (9,), generator=g)
    mirrored = torch.rand(9, generator=g) < 0.5
    for i in range(9):
        padded = F.pad(images[i:i + 1].float(), (pad, pad, pad, pad), mode="reflect")[0]
        crop = padded[:, dy[i]:dy[i] + 16, dx[i]:dx[i] + 16]
        expected = crop.flip(-1) if mirrored[i] else crop
        assert torch.equal(out[i], expected)


def test_flip_mirrors_whole_images_and_moves_nothing_else():
    """--augment flip (the original MbDML code's): each image is itself or its mirror image, both occur; a data set
    that must not be flipped (digits) is left as it is."""
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    out = augment(images, "flip", True, torch.Generator().manual_seed(0))
    assert torch.equal(out * 255, random_flip(images, torch.Generator().manual_seed(0)))
    kept = [torch.equal(out[i] * 255, images[i].float()) for i in range(40)]
    mirrored = [torch.equal(out[i] * 255, images[i].flip(-1).float()) for i in range(40)]
    assert all(k or m for k, m in zip(kept, mirrored)) and 0 < sum(mirrored) < 40
    assert torch.equal(augment(images, "flip", False, torch.Generator()), images.float() / 255)


def test_views_are_reproducible_and_in_range():
    images = torch.randint(0, 256, (6, 1, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(8))
    global_state = torch.random.get_rng_state()
    for kind in ("none", "flip", "weak", "strong"):
        a = augment(images, kind, True, torch.Generator().manual_seed(5))
        b = augment(images, kind, True, torch.Generator().manual_seed(5))
        assert torch.equal(a, b) and a.dtype == torch.float32 and a.shape == images.shape
        assert 0 <= a.min() and a.max() <= 1
    assert torch.equal(torch.random.get_rng_state(), global_state)  # every draw comes from the generator
    assert torch.equal(augment(images, "none", True, torch.Generator()), images.float() / 255)
    assert not torch.equal(augment(images, "strong", True, torch.Generator().manual_seed(5)),
                           augment(images, "weak", True, torch.Generator().manual_seed(5)))
    weak = augment(images, "weak", False, torch.Generator().manual_seed(1))
    assert not torch.equal(weak, images.float() / 255)


def test_cutout_erases_one_square_of_at_most_a_quarter_to_the_image_mean():
    images = torch.rand(40, 3, 16, 16, generator=torch.Generator().manual_seed(9)) + 0.1  # no pixel equals a mean
    out = random_erase(images, torch.Generator().manual_seed(3))
    for image, erased in zip(images, out):
        changed = (erased != image).any(0)  # (H, W)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert h == w and changed.sum() == h * w and h * w <= 0.25 * 16 * 16  # one square, at most a quarter
        assert torch.allclose(erased[:, changed], image.mean().expand(3, int(changed.sum())))


def test_rand_augment_equals_torchvision_applied_image_by_image():
    from torchvision.transforms import v2

    images = torch.randint(0, 256, (60, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    out = rand_augment(images, torch.Generator().manual_seed(2))
    # replay the same draws, one image at a time, through torchvision's own operations
    g, transform = torch.Generator().manual_seed(2), v2.RandAugment(2, 9, 31)
    space = list(transform._AUGMENTATION_SPACE.items())
    draws = [(torch.randint(0, len(space), (60,), generator=g), torch.rand(60, generator=g) <= 0.5) for _ in range(2)]
    assert len({int(k) for drawn, _ in draws for k in drawn}) == len(space)  # every operation is exercised
    for i in range(60):
        expected = images[i]
        for drawn, negative in draws:
            name, (magnitudes_fn, signed) = space[int(drawn[i])]
            magnitudes = magnitudes_fn(31, 12, 12)
            value = 0.0 if magnitudes is None else float(magnitudes[9]) * (-1 if signed and negative[i] else 1)
            expected = transform._apply_image_or_video_transform(expected, name, value, interpolation=
                                                                 transform.interpolation, fill=transform._fill)
        assert torch.equal(out[i], expected), i
    assert not torch.equal(out, images)
