"""CIFAR-10 and CIFAR-100 from their official Python pickles, read by torchvision's dataset classes.

torchvision verifies each file's MD5 before reading, which rejects any file but the originals (e.g. small test
files in the same format). The subclasses here only check that the files exist; downloads keep their MD5 check.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any, ClassVar

import torch

from weakdml.compat import import_torchvision
from weakdml.config import DataConfig
from weakdml.data.status import DatasetStatus, data_root, not_found
from weakdml.data.types import DataBundle, ImageSet
from weakdml.errors import UserError

# name -> (torchvision class name, description)
_SETS = {
    "cifar10": ("CIFAR10", "60,000 32x32 colour images in 10 classes (python pickles)"),
    "cifar100": ("CIFAR100", "60,000 32x32 colour images in 100 classes (python pickles)"),
}
_HOW_TO_GET = "pass --download, or extract {archive} from https://www.cs.toronto.edu/~kriz/cifar.html into {root}"


@functools.cache
def _local_class(class_name: str) -> Any:
    """torchvision's class with the MD5 checks of local files replaced by existence checks."""
    base = getattr(import_torchvision().datasets, class_name)

    class Local(base):  # type: ignore[misc, valid-type]
        # check_integrity(path, None) only tests that the file exists
        meta: ClassVar[dict[str, Any]] = {**base.meta, "md5": None}

        def _check_integrity(self) -> bool:
            return all(self._path(name).is_file() for name, _ in self.train_list + self.test_list)

        def _path(self, name: str) -> Path:
            return Path(self.root) / self.base_folder / name

    Local.__name__ = Local.__qualname__ = f"Local{class_name}"
    return Local


def _files(name: str, cfg: DataConfig) -> list[Path]:
    cls = _local_class(_SETS[name][0])
    folder = data_root(cfg) / cls.base_folder
    return [folder / file for file, _ in cls.train_list + cls.test_list] + [folder / cls.meta["filename"]]


def _how_to_get(name: str, cfg: DataConfig) -> str:
    return _HOW_TO_GET.format(archive=_local_class(_SETS[name][0]).filename, root=data_root(cfg))


def load(name: str, cfg: DataConfig) -> DataBundle:
    """CIFAR as uint8 (N, 3, 32, 32) with torchvision's class names."""
    cls = _local_class(_SETS[name][0])
    root = data_root(cfg)
    if not cfg.download and not all(path.is_file() for path in _files(name, cfg)):
        raise not_found(name, [str(root / cls.base_folder)], _how_to_get(name, cfg))
    try:
        parts = [cls(str(root), train=train, download=cfg.download) for train in (True, False)]
    except (OSError, EOFError, KeyError, ValueError, RuntimeError, pickle.UnpicklingError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"{name}: cannot read {root / cls.base_folder} ({reason}); {_how_to_get(name, cfg)}") from None
    train, test = (
        ImageSet(torch.from_numpy(p.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(p.targets)) for p in parts
    )  # torchvision keeps (N, H, W, C); we use (N, C, H, W)
    return DataBundle(name, train, test, list(parts[0].classes))


def status(name: str, cfg: DataConfig) -> DatasetStatus:
    cls = _local_class(_SETS[name][0])
    found = all(path.is_file() for path in _files(name, cfg))
    return DatasetStatus(name, found, [str(data_root(cfg) / cls.base_folder)], _how_to_get(name, cfg), _SETS[name][1])
