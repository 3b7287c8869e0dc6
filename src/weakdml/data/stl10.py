"""STL-10 from its official binary files, read by torchvision's STL10 class.

The local subclass only checks that the labelled files exist (torchvision checks MD5s, and wants the 2.6 GB
unlabelled file even for the labelled splits); the unlabelled split is read when its file is present.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weakdml.compat import import_torchvision
from weakdml.config import DataConfig
from weakdml.data.status import DatasetStatus, data_root, not_found
from weakdml.data.types import DataBundle, ImageSet
from weakdml.errors import UserError

DESCRIPTION = "13,000 labelled + 100,000 unlabelled 96x96 colour images in 10 classes (binary files)"
CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
_LABELLED = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
_UNLABELLED = "unlabeled_X.bin"


@functools.cache
def _local_class() -> Any:
    base = import_torchvision().datasets.STL10

    class LocalSTL10(base):  # type: ignore[misc, valid-type]
        def _check_integrity(self) -> bool:
            return all((Path(self.root) / self.base_folder / name).is_file() for name in _LABELLED)

    return LocalSTL10


def _folder(cfg: DataConfig) -> Path:
    return data_root(cfg) / "stl10_binary"


def _how_to_get(cfg: DataConfig) -> str:
    return (f"pass --download, or extract stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/ "
            f"into {data_root(cfg)}")


def _image_set(dataset: Any) -> ImageSet:
    if len(dataset.labels) != len(dataset.data):
        raise UserError(
            f"stl10: {len(dataset.data)} images but {len(dataset.labels)} labels in {dataset.root}; "
            "replace the files with the official ones"
        )
    images = torch.from_numpy(np.ascontiguousarray(dataset.data))  # (N, 3, 96, 96), rows first after torchvision
    return ImageSet(images, torch.from_numpy(dataset.labels.astype(np.int64)))


def load(cfg: DataConfig) -> DataBundle:
    """STL-10 as uint8 (N, 3, 96, 96), labels 0..9; the unlabelled split (if present) as ``bundle.unlabeled``."""
    cls, folder, root = _local_class(), _folder(cfg), str(data_root(cfg))
    if not cfg.download and not all((folder / name).is_file() for name in _LABELLED):
        raise not_found("stl10", [str(folder)], _how_to_get(cfg))
    try:
        train = cls(root, split="train", download=cfg.download)
        test = cls(root, split="test")
        unlabeled = cls(root, split="unlabeled") if (folder / _UNLABELLED).is_file() else None
    except (OSError, ValueError, RuntimeError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"stl10: cannot read {folder} ({reason}); {_how_to_get(cfg)}") from None
    classes = list(getattr(train, "classes", CLASSES))
    extra = _image_set(unlabeled) if unlabeled is not None else None
    return DataBundle("stl10", _image_set(train), _image_set(test), classes, unlabeled=extra)


def status(cfg: DataConfig) -> DatasetStatus:
    found = all((_folder(cfg) / name).is_file() for name in _LABELLED)
    return DatasetStatus("stl10", found, [str(_folder(cfg))], _how_to_get(cfg), DESCRIPTION)
