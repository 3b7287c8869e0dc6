"""Every data set by name: load one as a DataBundle, or report which ones are available locally.

Each data set lives in its own module with ``load(cfg)`` and ``status(cfg)``; this module adds what is common to all:
resizing to ``--input-size`` and extra unlabelled images from ``--unlabeled-dir``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from weakdml.config import DataConfig
from weakdml.data import cars196, cifar, cub200, digits, flat_folder, flowers17, folder, idx_sets, inshop, sop, stl10
from weakdml.data.images import list_images, read_images, resize_images
from weakdml.data.memory import check_image_memory
from weakdml.data.status import DatasetStatus
from weakdml.data.types import DataBundle, ImageSet
from weakdml.errors import UserError

__all__ = ["DATASET_NAMES", "DatasetStatus", "dataset_status", "load_dataset"]

_DATASETS: dict[str, tuple[Callable[[DataConfig], DataBundle], Callable[[DataConfig], DatasetStatus]]] = {
    "digits": (digits.load, digits.status),
    "mnist": (partial(idx_sets.load, "mnist"), partial(idx_sets.status, "mnist")),
    "fashion-mnist": (partial(idx_sets.load, "fashion-mnist"), partial(idx_sets.status, "fashion-mnist")),
    "cifar10": (partial(cifar.load, "cifar10"), partial(cifar.status, "cifar10")),
    "cifar100": (partial(cifar.load, "cifar100"), partial(cifar.status, "cifar100")),
    "stl10": (stl10.load, stl10.status),
    "flowers17": (flowers17.load, flowers17.status),
    "folder": (folder.load, folder.status),
    "cub200": (cub200.load, cub200.BENCHMARK.status),
    "cars196": (cars196.load, cars196.BENCHMARK.status),
    "sop": (sop.load, sop.BENCHMARK.status),
    "inshop": (inshop.load, inshop.BENCHMARK.status),
    "images": (flat_folder.load, flat_folder.status),
}
DATASET_NAMES: tuple[str, ...] = tuple(_DATASETS)
# Used when --input-size is not given: the 8x8 digits are upsampled, because the small CNN learns them much better
# at 16 px (docs/results.md, design decisions). Other sets keep their native size.
DEFAULT_INPUT_SIZE = {"digits": 16}


def load_dataset(cfg: DataConfig) -> DataBundle:
    """Load ``cfg.dataset``, resized to ``cfg.input_size`` if set, with ``cfg.unlabeled_dir``'s images added."""
    if cfg.dataset not in _DATASETS:
        raise UserError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
    bundle = _DATASETS[cfg.dataset][0](cfg)
    size = cfg.input_size or DEFAULT_INPUT_SIZE.get(cfg.dataset)
    if size is not None:
        parts = [part for part in (bundle.train, bundle.test, bundle.unlabeled) if isinstance(part, ImageSet)]
        check_image_memory(sum(len(part) for part in parts), bundle.channels, size, size)
        for part in (bundle.train, bundle.test, bundle.unlabeled):
            if isinstance(part, ImageSet) and part.images.shape[-2:] != (size, size):  # a cache has its size
                part.images = resize_images(part.images, size)
    if cfg.unlabeled_dir is not None:
        extra = _unlabeled_images(Path(cfg.unlabeled_dir).expanduser(), bundle.train)
        if bundle.unlabeled is not None:
            extra = ImageSet(
                torch.cat([bundle.unlabeled.images, extra.images]), torch.cat([bundle.unlabeled.labels, extra.labels])
            )
        bundle.unlabeled = extra
    return bundle


def _unlabeled_images(directory: Path, like: ImageSet) -> ImageSet:
    """Every image under ``directory`` with the channels and size of ``like``; labels all -1."""
    if not directory.is_dir():
        raise UserError(f"unlabelled image folder {directory} not found; check --unlabeled-dir")
    paths = list_images(directory)
    if not paths:
        raise UserError(
            f"unlabelled image folder {directory} holds no images (png, jpg, jpeg, bmp, gif, tif, tiff, "
            "webp); check --unlabeled-dir"
        )
    channels, height, width = like.shape
    check_image_memory(len(paths), channels, height, width)
    images = read_images(paths, size=(height, width), channels=channels)
    return ImageSet(images, torch.full((len(images),), -1, dtype=torch.long))


def dataset_status(cfg: DataConfig) -> list[DatasetStatus]:
    """Every known data set: whether its files were found for ``cfg``, where it looked, how to get it."""
    return [status(cfg) for _, status in _DATASETS.values()]
