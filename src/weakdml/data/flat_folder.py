"""A flat folder of unlabelled images (``--dataset images --data-root FOLDER``; ``weakdml cluster FOLDER``): every
image file under it, any common format, size or colour mode, decoded once to one shape; no labels, no test set.
The files' paths (relative to the folder) are the images' ids, e.g. in ``predictions.csv``."""

from __future__ import annotations

from pathlib import Path

import torch

from weakdml.config import DataConfig
from weakdml.data.images import extensions, list_images, read_images
from weakdml.data.memory import check_image_memory
from weakdml.data.status import DatasetStatus
from weakdml.data.types import DataBundle, ImageSet
from weakdml.errors import UserError

DESCRIPTION = "a flat folder of unlabelled images (--data-root FOLDER), e.g. for weakdml cluster"
HOW_TO_GET = "pass the folder of images as --data-root FOLDER (weakdml cluster FOLDER)"


def load(cfg: DataConfig) -> DataBundle:
    if cfg.data_root is None:
        raise UserError(f"the images dataset needs its folder: {HOW_TO_GET}")
    folder = Path(cfg.data_root).expanduser()
    if not folder.is_dir():
        raise UserError(f"image folder {folder} not found")
    paths = list_images(folder, extensions(cfg.im_ext))
    if not paths:
        raise UserError(f"image folder {folder} holds no images (png, jpg, jpeg, bmp, gif, tif, tiff, webp); add some "
                        f"or check the path")
    if cfg.input_size:
        check_image_memory(len(paths), 3, cfg.input_size, cfg.input_size)
    images = read_images(paths, size=cfg.input_size)
    empty = ImageSet(images[:0], torch.zeros(0, dtype=torch.long))
    return DataBundle("images", ImageSet(images, torch.full((len(images),), -1, dtype=torch.long)), empty, [],
                      flip=True, train_ids=[str(p.relative_to(folder)) for p in paths])


def status(cfg: DataConfig) -> DatasetStatus:
    found = cfg.data_root is not None and Path(cfg.data_root).expanduser().is_dir()
    return DatasetStatus("images", found, [cfg.data_root] if cfg.data_root else [], HOW_TO_GET, DESCRIPTION)
