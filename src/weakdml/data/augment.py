"""Batched image augmentation on tensors: a few calls per batch, never a Python loop over its images.

Images enter as uint8 (B, C, H, W) and leave as float in [0, 1]; the model normalises them itself. ``flip`` is a
horizontal flip alone where the data set allows it (the original MbDML code's: its same-size RandomCrop moved
nothing); ``weak`` is the standard random crop (reflect padding of 1/8 of the side) plus that flip;
``strong`` adds RandAugment (torchvision transforms.v2's operations, drawn per image and applied in batches of the
images that drew the same one) and random erasing, the noise of Noisy Student and FixMatch; ``retrieval`` is the
deep-metric-learning papers' random resized crop (scale 0.16-1, aspect ratio 3/4-4/3) plus that flip; ``auto`` is
``retrieval`` for data sets whose images are cropped (``crop``: the retrieval benchmarks), else ``weak``. With a
``crop`` side the other kinds start from the centre crop, as the test images do (``eval_view``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from weakdml.compat import import_torchvision
from weakdml.data.draws import Draws
from weakdml.precision import in_full_precision
from weakdml.transfer import chosen_rows, to_device

AUGMENTATIONS = ("auto", "none", "flip", "weak", "strong", "retrieval")


def random_flip(images: torch.Tensor, generator: torch.Generator | Draws) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2, as float."""
    mirrored = to_device(Draws.of(generator, len(images)).rand() < 0.5, images.device)
    return torch.where(mirrored[:, None, None, None], images.flip(-1), images).float()


def random_crop_flip(images: torch.Tensor, flip: bool, generator: torch.Generator | Draws) -> torch.Tensor:
    """Random translation by up to 1/8 of each side (reflect-padded) and optional horizontal flip, per image."""
    b, _, h, w = images.shape
    draws = Draws.of(generator, b)
    pad_h, pad_w = max(1, h // 8), max(1, w // 8)
    padded = F.pad(images.float(), (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    dy = to_device(draws.randint(2 * pad_h + 1), images.device)
    dx = to_device(draws.randint(2 * pad_w + 1), images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]  # (B, 1, W)
    if flip:
        mirrored = to_device(draws.rand() < 0.5, images.device)
        cols = torch.where(mirrored[:, None, None], cols.flip(-1), cols)
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def rand_augment(images: torch.Tensor, generator: torch.Generator | Draws, num_ops: int = 2, magnitude: int = 9,
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
    draws, (h, w) = Draws.of(generator, len(images)), images.shape[-2:]
    operations = []  # (name, magnitude at this image size, signed), from name -> (magnitudes(bins, h, w), signed)
    for name, (magnitudes_fn, signed) in transform._AUGMENTATION_SPACE.items():
        magnitudes = magnitudes_fn(bins, h, w)
        operations.append((name, 0.0 if magnitudes is None else float(magnitudes[magnitude]), signed))
    out = images.clone()
    for _ in range(num_ops):
        drawn, negative = draws.randint(len(operations)), draws.rand() <= 0.5  # on the CPU: rows chosen there
        for k, (name, value, signed) in enumerate(operations):
            if name == "Identity":
                continue
            chosen = drawn == k
            for sign, mask in ((1, chosen & ~negative), (-1, chosen & negative)) if signed else ((1, chosen),):
                rows = chosen_rows(mask, images.device)
                if rows is not None:
                    out[rows] = transform._apply_image_or_video_transform(
                        out[rows], name, sign * value, interpolation=transform.interpolation, fill=transform._fill)
    return out


def center_crop(images: torch.Tensor, side: int | None) -> torch.Tensor:
    """The centred ``side`` x ``side`` square of each image (B, C, H, W) (torchvision's CenterCrop); None: all."""
    if side is None:
        return images
    h, w = images.shape[-2:]
    top, left = round((h - side) / 2), round((w - side) / 2)
    return images[..., top:top + side, left:left + side]


def eval_view(images: torch.Tensor, crop: int | None) -> torch.Tensor:
    """What the network sees of a uint8 batch at test time: the centre crop, as float in [0, 1]."""
    return center_crop(images, crop).float() / 255


def random_boxes(b: int, h: int, w: int, generator: torch.Generator | Draws, scale: tuple[float, float] = (0.16, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10) -> torch.Tensor:
    """torchvision's RandomResizedCrop boxes for ``b`` images of h x w, drawn at once: a random share ``scale`` of
    the area with a log-uniform aspect ratio in ``ratio``, the first of ``attempts`` draws that fits, else the whole
    image; at a uniformly random place. (B, 4) float: top, left, height, width in pixels."""
    draws = Draws.of(generator, b)
    area = h * w * draws.uniform(*scale, attempts)
    aspect = draws.uniform(math.log(ratio[0]), math.log(ratio[1]), attempts).exp()
    box_w, box_h = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()  # (B, attempts)
    fits = (box_w >= 1) & (box_w <= w) & (box_h >= 1) & (box_h <= h)
    first = fits.float().argmax(1, keepdim=True)  # (B, 1): the first attempt that fits (0 if none does)
    box_w = torch.where(fits.any(1), box_w.gather(1, first)[:, 0], float(w))
    box_h = torch.where(fits.any(1), box_h.gather(1, first)[:, 0], float(h))
    top = (draws.rand() * (h - box_h + 1)).floor()
    left = (draws.rand() * (w - box_w + 1)).floor()
    return torch.stack([top, left, box_h, box_w], 1)


def _sample_points(start: torch.Tensor, length: torch.Tensor, size: int, side: int) -> torch.Tensor:
    """(B, side) where the ``side`` output pixels of each box [start, start + length) sample along an image axis of
    ``size`` pixels, in grid_sample's coordinates: bilinear resizing of the cut-out box (pixel centres, clamped to the
    box as when resizing the box alone)."""
    steps = (torch.arange(side) + 0.5) / side  # (side,)
    pixels = start[:, None] + steps * length[:, None] - 0.5  # (B, side) in the image's pixel coordinates
    pixels = torch.maximum(torch.minimum(pixels, (start + length - 1)[:, None]), start[:, None])
    return (pixels + 0.5) * 2 / size - 1


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, side: int, mirror: torch.Tensor) -> torch.Tensor:
    """Each image's box (``random_boxes``' (B, 4)) resized to ``side`` x ``side`` by bilinear interpolation (as
    torchvision's resized_crop without antialiasing, which suits the boxes of the retrieval crop, at most 256/224
    times the output, and aug+'s at the image's own size, never larger than it), mirrored where ``mirror`` (B,) is
    True: one batched grid_sample. Float (B, C, side, side)."""
    b, _, h, w = images.shape
    top, left, box_h, box_w = boxes.unbind(1)
    xs = _sample_points(left, box_w, w, side)
    xs = torch.where(mirror[:, None], xs.flip(1), xs)
    xs, ys = to_device(xs, images.device), to_device(_sample_points(top, box_h, h, side), images.device)
    grid = torch.stack([xs[:, None, :].expand(b, side, side), ys[:, :, None].expand(b, side, side)], -1)  # (B,S,S,2)
    return F.grid_sample(images.float(), grid, mode="bilinear", align_corners=False)


def random_resized_crop(images: torch.Tensor, side: int, flip: bool, generator: torch.Generator | Draws
                        ) -> torch.Tensor:
    """The retrieval papers' training crop: RandomResizedCrop(side, scale 0.16-1) and, where ``flip``, a random
    horizontal flip, per image; float."""
    b, _, h, w = images.shape
    draws = Draws.of(generator, b)
    boxes = random_boxes(b, h, w, draws)
    mirror = draws.rand() < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    return resized_crops(images, boxes, side, mirror)


@in_full_precision  # data preparation, also when called inside training's autocast
def augment(images: torch.Tensor, kind: str, flip: bool, generator: torch.Generator | Draws, crop: int | None = None
            ) -> torch.Tensor:
    """Apply the named augmentation to a uint8 batch; returns float images in [0, 1] (``crop`` x ``crop`` if set).
    ``generator``: the epoch's generator, or ``Draws`` from it when the batch is one process's rows of a larger one."""
    generator = Draws.of(generator, len(images))
    if kind == "auto":
        kind = "retrieval" if crop else "weak"
    if kind == "retrieval":
        return random_resized_crop(images, crop or images.shape[-1], flip, generator) / 255
    images = center_crop(images, crop)
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


def random_erase(images: torch.Tensor, generator: torch.Generator | Draws, max_fraction: float = 0.25
                 ) -> torch.Tensor:
    """Cutout: erase one random square of up to ``max_fraction`` of the area per image (to the image mean)."""
    b, _, h, w = images.shape
    draws = Draws.of(generator, b)
    side = (draws.rand() * max_fraction).sqrt()
    sh, sw = (side * h).long().clamp(min=1), (side * w).long().clamp(min=1)
    y0 = (draws.rand() * (h - sh + 1)).long()
    x0 = (draws.rand() * (w - sw + 1)).long()
    ys, xs = torch.arange(h)[None, :], torch.arange(w)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < (y0 + sh)[:, None])  # (B, H)
    in_x = (xs >= x0[:, None]) & (xs < (x0 + sw)[:, None])  # (B, W)
    mask = (to_device(in_y, images.device)[:, :, None] & to_device(in_x, images.device)[:, None, :])[:, None]
    return torch.where(mask, images.mean(dim=(1, 2, 3), keepdim=True), images)
