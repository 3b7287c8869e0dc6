"""CIFAR-10 and CIFAR-100 from their official Python pickles, read without running anything in them.

The files are pickles, and a pickle can run code: they are read by ``safe_pickle`` (plain data and numpy arrays
only), never by ``pickle.load`` or torchvision's dataset classes, and their content is checked (uint8 rows of
3 x 32 x 32 values, one integer label per row, a list of class names). Only the file names, the archive and its
MD5 are taken from torchvision; ``--download`` fetches the archive with torchvision's MD5-checked download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from weakdml.compat import import_torchvision
from weakdml.config import DataConfig
from weakdml.data.safe_pickle import load_data_pickle
from weakdml.data.status import DatasetStatus, data_root, not_found
from weakdml.data.types import DataBundle, ImageSet
from weakdml.errors import UserError

_HOW_TO_GET = "pass --download, or extract {archive} from https://www.cs.toronto.edu/~kriz/cifar.html into {root}"


class _Set(NamedTuple):
    class_name: str  # torchvision's class, whose attributes name the files
    label_key: str
    description: str


_SETS = {
    "cifar10": _Set("CIFAR10", "labels", "60,000 32x32 colour images in 10 classes (python pickles)"),
    "cifar100": _Set("CIFAR100", "fine_labels", "60,000 32x32 colour images in 100 classes (python pickles)"),
}


def _layout(name: str) -> Any:
    return getattr(import_torchvision().datasets, _SETS[name].class_name)


def _folder(name: str, cfg: DataConfig) -> Path:
    return data_root(cfg) / _layout(name).base_folder


def _files(name: str, cfg: DataConfig) -> list[Path]:
    layout = _layout(name)
    return [_folder(name, cfg) / file for file, _ in layout.train_list + layout.test_list + [
        (layout.meta["filename"], None)]]


def _how_to_get(name: str, cfg: DataConfig) -> str:
    return _HOW_TO_GET.format(archive=_layout(name).filename, root=data_root(cfg))


def _read_batch(path: Path, label_key: str) -> ImageSet:
    """One batch file: {'data': uint8 (N, 3072), label_key: N integers} -> uint8 (N, 3, 32, 32) and labels."""
    entry = load_data_pickle(path)
    data = entry.get("data") if isinstance(entry, dict) else None
    labels = entry.get(label_key) if isinstance(entry, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path} holds no 'data' array of uint8 rows of 3x32x32 values; replace it with the official "
                        f"file")
    if not isinstance(labels, list) or len(labels) != len(data) or not all(
            isinstance(label, int) and not isinstance(label, bool) and label >= 0 for label in labels):
        raise UserError(f"{path} holds no '{label_key}' list of one class number per image; replace it with the "
                        f"official file")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())  # official layout: channel planes, rows first
    return ImageSet(images, torch.tensor(labels, dtype=torch.long))


def _read_part(name: str, cfg: DataConfig, files: list[list[str]]) -> ImageSet:
    parts = [_read_batch(_folder(name, cfg) / file, _SETS[name].label_key) for file, _ in files]
    return ImageSet(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


def load(name: str, cfg: DataConfig) -> DataBundle:
    """CIFAR as uint8 (N, 3, 32, 32) with the class names of its meta file."""
    layout = _layout(name)
    if cfg.download and not all(path.is_file() for path in _files(name, cfg)):
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(layout.url, str(data_root(cfg)), filename=layout.filename,
                                         md5=layout.tgz_md5)
        except (OSError, RuntimeError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise UserError(f"{name}: download into {data_root(cfg)} failed ({reason}); check the network") from None
    if not all(path.is_file() for path in _files(name, cfg)):
        raise not_found(name, [str(_folder(name, cfg))], _how_to_get(name, cfg))
    train, test = _read_part(name, cfg, layout.train_list), _read_part(name, cfg, layout.test_list)
    meta_path = _folder(name, cfg) / layout.meta["filename"]
    meta = load_data_pickle(meta_path)
    classes = meta.get(layout.meta["key"]) if isinstance(meta, dict) else None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or not classes:
        raise UserError(f"{meta_path} holds no '{layout.meta['key']}' list of class names; replace it with the "
                        f"official file")
    if not len(train) or not len(test) or int(max(train.labels.max(), test.labels.max())) >= len(classes):
        raise UserError(f"{name}: {_folder(name, cfg)} holds no images, or a label that is not one of the "
                        f"{len(classes)} classes of {meta_path.name}; replace the files with the official ones")
    return DataBundle(name, train, test, list(classes))


def status(name: str, cfg: DataConfig) -> DatasetStatus:
    found = all(path.is_file() for path in _files(name, cfg))
    return DatasetStatus(name, found, [str(_folder(name, cfg))], _how_to_get(name, cfg), _SETS[name].description)
