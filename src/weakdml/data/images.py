"""Reading image files into one uint8 tensor (N, C, H, W), and resizing such tensors.

Every file is decoded by PIL exactly once; everything after that works on arrays and tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageOps

from weakdml.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DEFAULT_SIZE = 64  # side used when images differ in size and no --input-size is given
_GREY_MODES = {"1", "L", "LA", "La"}
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # 16- and 32-bit integer, 32-bit float (all grey)
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
BACKGROUND = (255, 255, 255)  # what transparent pixels show: white, as image viewers and web pages show them


def extensions(im_ext: str | None) -> tuple[str, ...]:
    """The accepted file suffixes: ``im_ext`` alone (with or without its dot), else every common image format."""
    if not im_ext:
        return IMAGE_EXTENSIONS
    return ("." + im_ext.strip().lstrip(".").lower(),)


def list_images(folder: Path, suffixes: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files anywhere under ``folder`` (hidden ones skipped), sorted by path."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in suffixes
        and p.is_file()
        and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )


def _open(path: Path) -> Image.Image:
    """Decode one file as "L" (grey) or "RGB", upright (its EXIF orientation applied), with transparent pixels over
    BACKGROUND and 16-bit, 32-bit and float images scaled to 8 bits by their own range (see ``_to_8_bit``); an
    unreadable file is a UserError that names it."""
    try:
        with Image.open(path) as source:
            source.load()
            image = _upright(source)
            mode = image.mode
            if mode in _HIGH_DEPTH_MODES:
                return _to_8_bit(image)
            if mode in _ALPHA_MODES or "transparency" in image.info:
                image = Image.alpha_composite(Image.new("RGBA", image.size, BACKGROUND), image.convert("RGBA"))
            if mode in _GREY_MODES:
                return image.convert("L")
            rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = " ".join(str(error).split())
        raise UserError(f"cannot read image {path} ({reason}); remove or replace that file") from None
    if mode in ("P", "PA"):  # palette images (GIF, PNG-8) are often grey
        array = np.asarray(rgb)
        if (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all():
            return rgb.convert("L")
    return rgb


def _upright(image: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: cameras store a turned photo unturned, with an EXIF orientation tag."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def _to_8_bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grey image as "L", its lowest value 0 and its highest 255 (linearly between).

    The image's own range, not its type's: 16-bit files often use 10 or 12 bits, float ones any scale, and PIL's
    own conversion clips them (all 255, or all 0). The cost: images are each stretched to full contrast. A constant
    image becomes 0; non-finite float pixels count as the lowest value."""
    values = np.asarray(image, dtype=np.float64)  # (H, W)
    finite = np.isfinite(values)
    low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
    scaled = np.zeros_like(values)
    if high > low:
        scaled = (np.where(finite, values, low) - low) * (255 / (high - low))
    return Image.fromarray(np.round(scaled).astype(np.uint8))  # (H, W) uint8: mode "L"


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    height, width = size
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BILINEAR)  # PIL's bilinear antialiases when shrinking


def _array(image: Image.Image, shape: tuple[int, int, int]) -> np.ndarray:
    """``image`` resized to ``shape``'s (H, W), then converted to its channels (1 or 3), as uint8 (C, H, W)."""
    channels, height, width = shape
    if channels not in (1, 3):
        raise ValueError(f"images have 1 or 3 channels, not {channels}")
    array = np.asarray(_resized(image, (height, width)).convert("RGB" if channels == 3 else "L"))  # (H, W[, 3])
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


def decode_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """One image file as uint8 (C, H, W) of ``shape``: the decoding that every reader of files shares (the same
    values as ``read_images`` with that size and channels). An unreadable file is a UserError that names it."""
    return _array(_open(path), shape)


def header_shape(paths: Sequence[Path], size: int | None = None) -> tuple[int, int, int]:
    """The (C, H, W) that files are decoded to without reading their pixels (from their headers): 1 channel when
    every file is grey, else 3; ``size`` square, else the files' common size, else DEFAULT_SIZE square."""
    sizes, grey = set(), True
    for path in paths:
        try:
            with Image.open(path) as image:
                sizes.add(image.size)
                grey = grey and image.mode in _GREY_MODES | _HIGH_DEPTH_MODES
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise UserError(f"cannot read image {path} ({' '.join(str(error).split())}); remove or replace that "
                            f"file") from None
    if size:
        height = width = size
    else:
        width, height = sizes.pop() if len(sizes) == 1 else (DEFAULT_SIZE, DEFAULT_SIZE)
    return (1 if grey else 3, height, width)


def read_images(
    paths: Sequence[Path], size: int | tuple[int, int] | None = None, channels: int | None = None
) -> torch.Tensor:
    """Read image files into uint8 (N, C, H, W).

    ``size`` (side or (H, W)) resizes while reading; without it images keep their common size, or become
    DEFAULT_SIZE square if sizes differ. ``channels`` forces 1 or 3; without it all are RGB if any file is colour.
    """
    target = (size, size) if isinstance(size, int) else size
    loaded: list[Image.Image] = []
    for path in paths:
        image = _open(path)
        if target is None and loaded and image.size != loaded[0].size:
            target = (DEFAULT_SIZE, DEFAULT_SIZE)
            loaded = [_resized(done, target) for done in loaded]
        loaded.append(image if target is None else _resized(image, target))
    if not loaded:
        raise ValueError("read_images needs at least one path")
    if channels is None:
        channels = 3 if any(image.mode == "RGB" for image in loaded) else 1
    return torch.from_numpy(np.stack([_array(image, (channels, image.height, image.width)) for image in loaded]))


def resize_images(images: torch.Tensor, size: int | tuple[int, int], chunk: int = 1024) -> torch.Tensor:
    """Bilinear, antialiased resize of uint8 (N, C, H, W) to (N, C, size, size), chunk by chunk to bound memory."""
    target = (size, size) if isinstance(size, int) else size
    if tuple(images.shape[-2:]) == target:
        return images
    out = torch.empty((len(images), images.shape[1], *target), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].float()
        part = F.interpolate(part, size=target, mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out
