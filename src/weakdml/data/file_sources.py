"""Image files as image sources that hold no pixels in memory: decoded once into the on-disk cache (``--cache-dir``)
and read from it batch by batch, or decoded again at every load (``--decode-on-load``, the default of the large
retrieval sets)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from weakdml.config import DataConfig
from weakdml.data.sources import FileSource, ImageSource, build_cache
from weakdml.errors import UserError

Side = tuple[Sequence[Path], torch.Tensor]  # (image files, their labels (N,))


def lazy_sources(sides: Sequence[Side], shape: tuple[int, int, int], cfg: DataConfig) -> list[ImageSource]:
    """One source per side, its files decoded to ``shape`` (C, H, W): through the cache in ``cfg.cache_dir`` if set,
    else at every load."""
    if cfg.cache_dir and cfg.decode_on_load:
        raise UserError("--cache-dir decodes the images once into a cache, --decode-on-load at every load: choose one")
    if cfg.cache_dir:
        return [build_cache(paths, labels, shape, Path(cfg.cache_dir), progress=True) for paths, labels in sides]
    return [FileSource(paths, labels, shape) for paths, labels in sides]
