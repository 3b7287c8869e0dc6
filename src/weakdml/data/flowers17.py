"""Oxford 17 Category Flowers: 1,360 jpgs, 80 per class in file order, with the official split 1 if available.

Files: ``<root>/jpg/image_0001.jpg`` ... ``image_1360.jpg`` (or ``<root>/17flowers/jpg``), and optionally
``datasplits.mat`` next to ``jpg``; without it a fixed stratified 80/20 split is used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch

from weakdml.config import DataConfig
from weakdml.data.holdout import fixed_holdout
from weakdml.data.images import DEFAULT_SIZE, read_images
from weakdml.data.memory import check_image_memory
from weakdml.data.status import DatasetStatus, data_root, not_found
from weakdml.data.types import DataBundle, ImageSet
from weakdml.errors import UserError

CLASSES = [
    "Daffodil",
    "Snowdrop",
    "LilyValley",
    "Bluebell",
    "Crocus",
    "Iris",
    "Tigerlily",
    "Tulip",
    "Fritillary",
    "Sunflower",
    "Daisy",
    "ColtsFoot",
    "Dandelion",
    "Cowslip",
    "Buttercup",
    "Windflower",
    "Pansy",
]
PER_CLASS = 80
COUNT = PER_CLASS * len(CLASSES)  # 1,360
DESCRIPTION = "1,360 colour photos of 17 flower species (jpg), resized to 64 px unless --input-size"


def _how_to_get(cfg: DataConfig) -> str:
    return (
        f"download 17flowers.tgz (and datasplits.mat) from https://www.robots.ox.ac.uk/~vgg/data/flowers/17/ "
        f"and extract into {data_root(cfg)} so that {data_root(cfg) / 'jpg' / 'image_0001.jpg'} exists"
    )


def _candidates(cfg: DataConfig) -> list[Path]:
    root = data_root(cfg)
    return [root / "jpg", root / "17flowers" / "jpg"]


def _paths(folder: Path) -> list[Path]:
    return [folder / f"image_{i:04d}.jpg" for i in range(1, COUNT + 1)]


def _folder(cfg: DataConfig) -> Path | None:
    """The first candidate folder that holds all 1,360 images; a partial folder is a UserError."""
    for folder in _candidates(cfg):
        if not (folder / "image_0001.jpg").is_file():
            continue
        missing = [p.name for p in _paths(folder) if not p.is_file()]
        if missing:
            raise UserError(
                f"flowers17: {len(missing)} of {COUNT} images missing in {folder} (first: {missing[0]}); "
                f"{_how_to_get(cfg)}"
            )
        return folder
    return None


def _split(folder: Path, root: Path, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Official split 1 (trn1 + val1 -> train, tst1 -> test) from datasplits.mat, else a fixed stratified split."""
    mat_path = next((p for p in (folder.parent / "datasplits.mat", root / "datasplits.mat") if p.is_file()), None)
    if mat_path is None:
        return fixed_holdout(labels)
    try:
        mat = scipy.io.loadmat(str(mat_path))
        train = np.concatenate([np.ravel(mat["trn1"]), np.ravel(mat["val1"])]).astype(np.int64) - 1  # 1-based
        test = np.ravel(mat["tst1"]).astype(np.int64) - 1
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"flowers17: cannot read split 1 from {mat_path} ({error}); replace or remove it") from None
    if min(train.min(), test.min()) < 0 or max(train.max(), test.max()) >= COUNT:
        raise UserError(f"flowers17: {mat_path} holds indices outside 1..{COUNT}; replace or remove it")
    return torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(test))


def load(cfg: DataConfig) -> DataBundle:
    """Flowers17 as uint8 (N, 3, S, S) with S = --input-size or 64."""
    folder = _folder(cfg)
    if folder is None:
        raise not_found("flowers17", [str(c) for c in _candidates(cfg)], _how_to_get(cfg))
    labels = torch.arange(COUNT) // PER_CLASS  # image_0001..0080 -> 0, 0081..0160 -> 1, ...
    size = cfg.input_size or DEFAULT_SIZE
    check_image_memory(COUNT, 3, size, size)
    everything = ImageSet(read_images(_paths(folder), size=size, channels=3), labels)
    train, test = _split(folder, data_root(cfg), labels)
    return DataBundle("flowers17", everything.subset(train), everything.subset(test), list(CLASSES))


def status(cfg: DataConfig) -> DatasetStatus:
    try:
        found = _folder(cfg) is not None
    except UserError:
        found = False
    return DatasetStatus("flowers17", found, [str(c) for c in _candidates(cfg)], _how_to_get(cfg), DESCRIPTION)
