"""MoCo v2's "aug+" augmentations (Chen et al. 2020, after SimCLR) on whole batches, every image with its own draws.

Per image, in this order: a random resized crop (area 0.2–1 of the image, aspect ratio 3/4–4/3) with a horizontal
flip (p 0.5), colour jitter (p 0.8: brightness, contrast and saturation factors in [0.6, 1.4], hue shift in
[-0.1, 0.1], the four in an order drawn per image), grayscale (p 0.2), Gaussian blur (p 0.5, sigma 0.1–2, a kernel of
about a tenth of the side). One-channel images get the suited variant: no saturation, hue or grayscale. Every draw
comes from the given ``torch.Generator``; the operations are a few batched tensor calls, never a loop over images.
Images enter as uint8 (B, C, H, W) and leave as float in [0, 1]. The flip is folded into the crop: every later
operation commutes with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weakdml.compat import import_torchvision
from weakdml.data.augment import random_boxes, resized_crops
from weakdml.data.draws import Draws
from weakdml.errors import UserError
from weakdml.precision import in_full_precision
from weakdml.transfer import chosen_rows, to_device

CROP_SCALE = (0.2, 1.0)
JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
JITTER_P, GRAYSCALE_P, BLUR_P, FLIP_P = 0.8, 0.2, 0.5, 0.5
BLUR_SIGMA = (0.1, 2.0)


def _uniform(draws: Draws, low: float, high: float, *tail: int) -> torch.Tensor:
    return low + (high - low) * draws.rand(*tail)


def _gray(images: torch.Tensor) -> torch.Tensor:
    """Luma (B, 1, H, W) of RGB images (torchvision's weights); one-channel images are their own."""
    if images.shape[1] == 1:
        return images
    import_torchvision()
    from torchvision.transforms.v2.functional import rgb_to_grayscale
    return rgb_to_grayscale(images)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor · images + (1 − factor) · other, per image (factor (B,)), clipped to [0, 1] (torchvision's blend)."""
    f = to_device(factor, images.device).view(-1, 1, 1, 1)
    return (f * images + (1 - f) * other).clamp(0, 1)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, torch.zeros_like(images), factor)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _gray(images).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _gray(images), factor)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images by ``shift`` (B,) turns, through torchvision's batched HSV conversion (the private
    ``_rgb_to_hsv``/``_hsv_to_rgb`` of transforms.v2; tests/test_moco.py checks them against ``adjust_hue``)."""
    import_torchvision()
    from torchvision.transforms.v2.functional import _color
    hsv = _color._rgb_to_hsv(images)
    hue = (hsv[:, 0] + to_device(shift, images.device).view(-1, 1, 1)).remainder(1.0)
    return _color._hsv_to_rgb(torch.cat([hue[:, None], hsv[:, 1:]], 1))


def colour_jitter(images: torch.Tensor, generator: torch.Generator | Draws, strength: tuple[float, ...] = JITTER
                  ) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter, each image with its own factors and its own order of the
    four; one-channel images get brightness and contrast only. Each slot of the order is one masked call per
    operation (at most 16 batched calls)."""
    draws = Draws.of(generator, images.shape[0])
    operations = [adjust_brightness, adjust_contrast]
    factors = [_uniform(draws, 1 - strength[0], 1 + strength[0]), _uniform(draws, 1 - strength[1], 1 + strength[1])]
    if images.shape[1] == 3:
        operations += [adjust_saturation, adjust_hue]
        factors += [_uniform(draws, 1 - strength[2], 1 + strength[2]), _uniform(draws, -strength[3], strength[3])]
    order = draws.rand(len(operations)).argsort(1)  # (B, ops), on the CPU: rows chosen there
    out = images.clone()
    for slot in range(len(operations)):
        for k, (operation, factor) in enumerate(zip(operations, factors)):
            mask = order[:, slot] == k
            rows = chosen_rows(mask, images.device)
            if rows is not None:
                out[rows] = operation(out[rows], factor[mask])
    return out


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-image ``sigma`` (B,), reflect padding (torchvision's kernel and padding):
    one grouped convolution per direction."""
    b, c, h, w = images.shape
    offsets = torch.arange(kernel_size, device=images.device) - kernel_size // 2
    sigma = to_device(sigma, images.device)
    kernel = torch.softmax(-0.5 * (offsets[None] / sigma[:, None]) ** 2, 1)  # (B, K), rows sum 1
    kernel = kernel.repeat_interleave(c, 0)[:, None]  # (B·C, 1, K): one kernel per image channel
    pad = kernel_size // 2
    x = F.pad(images.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, kernel[:, :, None, :], groups=b * c)  # along the width
    x = F.conv2d(x, kernel[:, :, :, None], groups=b * c)  # along the height
    return x.view(b, c, h, w)


def _chosen(draws: Draws, p: float) -> torch.Tensor:
    return draws.rand() < p


@in_full_precision  # data preparation, also when called inside training's autocast
def aug_plus(images: torch.Tensor, generator: torch.Generator | Draws, size: int | None = None,
             crop_scale: tuple[float, float] = CROP_SCALE, flip: bool = True) -> torch.Tensor:
    """One "aug+" view of a uint8 batch (B, C, H, W), C 1 or 3: float (B, C, size, size) in [0, 1] (``size``
    defaults to the images' height; ``crop_scale`` bounds the crop's share of the image's area, 0.2–1 in MoCo v2,
    a larger minimum suits tiny images; ``flip`` False: no mirroring, for images whose mirror is another thing,
    such as digits). Call it twice for MoCo's query and key views. Every image draws alike whether it is chosen
    for an operation or not (jitter is computed for all and kept where chosen), so ``Draws`` of one process's rows
    of a batch give that process the same views as one process augmenting the whole batch."""
    b, c, h, w = images.shape
    if c not in (1, 3):
        raise UserError(f"the aug+ augmentations need 1- or 3-channel images, got {c} channels")
    size, draws = size or h, Draws.of(generator, b)
    boxes = random_boxes(b, h, w, draws, crop_scale)
    out = resized_crops(images.float() / 255, boxes, size, _chosen(draws, FLIP_P if flip else 0.0))
    jittered = to_device(_chosen(draws, JITTER_P), images.device)
    out = torch.where(jittered[:, None, None, None], colour_jitter(out, draws), out)
    if c == 3:
        rows = chosen_rows(_chosen(draws, GRAYSCALE_P), images.device)
        if rows is not None:
            out[rows] = _gray(out[rows]).expand(-1, 3, -1, -1)
    blurred = _chosen(draws, BLUR_P)
    sigma = _uniform(draws, *BLUR_SIGMA)
    kernel_size = max(3, round(size / 10) // 2 * 2 + 1)  # odd, about a tenth of the side (23 px at 224 px)
    rows = chosen_rows(blurred, images.device)
    if rows is not None:
        out[rows] = gaussian_blur(out[rows], sigma[blurred], kernel_size)
    return out
