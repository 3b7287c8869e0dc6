"""Batched image augmentation on tensors: a few calls per batch, never a Python loop over its images.

Images enter as uint8 (B, C, H, W) and leave as float in [0, 1]; the model normalises them itself. ``flip`` is a
horizontal flip alone where the data set allows it (the original MbDML code's: its same-size RandomCrop moved
nothing); ``weak`` is the standard random crop (reflect padding of 1/8 of the side) plus that flip;
``strong`` adds RandAugment (torchvision transforms.v2's operations, drawn per image and applied in batches of the
images that drew the same one) and random erasing, the noise of Noisy Student and FixMatch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weakdml.compat import import_torchvision

AUGMENTATIONS = ("none", "flip", "weak", "strong")


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2, as float."""
    mirrored = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(mirrored[:, None, None, None], images.flip(-1), images).float()


def random_crop_flip(images: torch.Tensor, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to 1/8 of each side (reflect-padded) and optional horizontal flip, per image."""
    b, _, h, w = images.shape
    pad_h, pad_w = max(1, h // 8), max(1, w // 8)
    padded = F.pad(images.float(), (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    dy = torch.randint(0, 2 * pad_h + 1, (b,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * pad_w + 1, (b,), generator=generator).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]  # (B, 1, W)
    if flip:
        mirrored = torch.rand(b, generator=generator).to(images.device) < 0.5
        cols = torch.where(mirrored[:, None, None], cols.flip(-1), cols)
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def rand_augment(images: torch.Tensor, generator: torch.Generator, num_ops: int = 2, magnitude: int = 9,
                 bins: int = 31) -> torch.Tensor:
    """RandAugment on a uint8 batch: each image draws ``num_ops`` operations (and, for signed ones, a sign) at
    random from torchvision's RandAugment space, at ``magnitude`` of ``bins``. The images that drew the same
    operation and sign go through torchvision's transform together, one batched call each instead of one per image;
    the draws come from ``generator``. The operation table and dispatcher are RandAugment's private
    ``_AUGMENTATION_SPACE`` and ``_apply_image_or_video_transform``: a test checks them against torchvision
    applied image by image."""
    import_torchvision()
    from torchvision.transforms import v2
    transform = v2.RandAugment(num_ops, magnitude, bins)
    b, (h, w) = len(images), images.shape[-2:]
    operations = []  # (name, magnitude at this image size, signed), from name -> (magnitudes(bins, h, w), signed)
    for name, (magnitudes_fn, signed) in transform._AUGMENTATION_SPACE.items():
        magnitudes = magnitudes_fn(bins, h, w)
        operations.append((name, 0.0 if magnitudes is None else float(magnitudes[magnitude]), signed))
    out = images.clone()
    for _ in range(num_ops):
        drawn = torch.randint(0, len(operations), (b,), generator=generator).to(images.device)
        negative = (torch.rand(b, generator=generator) <= 0.5).to(images.device)
        for k, (name, value, signed) in enumerate(operations):
            chosen = drawn == k
            for sign, rows in ((1, chosen & ~negative), (-1, chosen & negative)) if signed else ((1, chosen),):
                if rows.any():
                    out[rows] = transform._apply_image_or_video_transform(
                        out[rows], name, sign * value, interpolation=transform.interpolation, fill=transform._fill)
    return out


def augment(images: torch.Tensor, kind: str, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Apply the named augmentation to a uint8 batch; returns float images in [0, 1]."""
    if kind == "none" or (kind == "flip" and not flip):
        return images.float() / 255
    if kind == "flip":
        return random_flip(images, generator) / 255
    if kind == "strong":
        images = rand_augment(images, generator)
    out = random_crop_flip(images, flip, generator) / 255
    if kind == "strong":
        out = random_erase(out, generator)
    return out


def random_erase(images: torch.Tensor, generator: torch.Generator, max_fraction: float = 0.25) -> torch.Tensor:
    """Cutout: erase one random square of up to ``max_fraction`` of the area per image (to the image mean)."""
    b, _, h, w = images.shape
    side = (torch.rand(b, generator=generator) * max_fraction).sqrt()
    sh, sw = (side * h).long().clamp(min=1), (side * w).long().clamp(min=1)
    y0 = (torch.rand(b, generator=generator) * (h - sh + 1)).long()
    x0 = (torch.rand(b, generator=generator) * (w - sw + 1)).long()
    ys, xs = torch.arange(h)[None, :], torch.arange(w)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < (y0 + sh)[:, None])  # (B, H)
    in_x = (xs >= x0[:, None]) & (xs < (x0 + sw)[:, None])  # (B, W)
    mask = (in_y[:, :, None] & in_x[:, None, :])[:, None].to(images.device)  # (B, 1, H, W)
    return torch.where(mask, images.mean(dim=(1, 2, 3), keepdim=True), images)
