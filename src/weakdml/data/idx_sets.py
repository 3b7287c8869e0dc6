"""MNIST and Fashion-MNIST from their official IDX files, read with torchvision's IDX reader.

The four files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, gzipped or not) are looked for in torchvision's
layout ``<root>/<Class>/raw/``, then in ``<root>`` itself, and for Fashion-MNIST also in the Debian package's folder.
Gzipped files are unpacked into a temporary folder, never next to the originals (which may be read-only).
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from weakdml.compat import import_torchvision
from weakdml.config import DataConfig
from weakdml.data.status import DatasetStatus, data_root, not_found
from weakdml.data.types import DataBundle, ImageSet
from weakdml.errors import UserError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class _Set(NamedTuple):
    class_name: str  # torchvision's class, also its folder under the root
    extra: tuple[Path, ...]  # further folders to look in
    flip: bool  # horizontal flips keep the class
    description: str
    how_to_get: str


_SETS = {
    "mnist": _Set(
        "MNIST",
        (),
        False,
        "70,000 28x28 grey handwritten digits (IDX files)",
        "pass --download, or put the 4 IDX files (.gz or not) into {root}/MNIST/raw",
    ),
    "fashion-mnist": _Set(
        "FashionMNIST",
        (DEBIAN_FASHION,),
        True,
        "70,000 28x28 grey clothing images (IDX files)",
        "apt-get install dataset-fashion-mnist (Debian), or pass --download, "
        + "or put the 4 IDX files (.gz or not) into {root}/FashionMNIST/raw",
    ),
}


def _folders(name: str, cfg: DataConfig) -> list[Path]:
    spec, root = _SETS[name], data_root(cfg)
    return [root / spec.class_name / "raw", root, *spec.extra]


def _files_in(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (plain preferred over .gz), or None unless all four are there."""
    found: dict[str, Path] = {}
    for stem in _STEMS:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[stem] = candidate
                break
        else:
            return None
    return found


def _locate(name: str, cfg: DataConfig) -> dict[str, Path] | None:
    for folder in _folders(name, cfg):
        files = _files_in(folder)
        if files is not None:
            return files
    return None


def _read(path: Path, reader: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """Apply torchvision's IDX reader to ``path``, unpacking a .gz copy into a temporary folder first."""
    try:
        if path.suffix != ".gz":
            return reader(str(path))
        with tempfile.TemporaryDirectory(prefix="weakdml-idx-") as tmp:
            plain = Path(tmp) / path.stem
            with gzip.open(path, "rb") as source, open(plain, "wb") as target:
                shutil.copyfileobj(source, target)
            return reader(str(plain))
    except (OSError, EOFError, AssertionError, TypeError, ValueError, RuntimeError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"{path} is not a valid IDX file ({reason}); replace it with the official file") from None


def load(name: str, cfg: DataConfig) -> DataBundle:
    """MNIST or Fashion-MNIST as uint8 (N, 1, 28, 28); downloads through torchvision only with --download."""
    tv = import_torchvision()
    from torchvision.datasets.mnist import read_image_file, read_label_file

    spec = _SETS[name]
    how_to_get = spec.how_to_get.format(root=data_root(cfg))
    dataset_class = getattr(tv.datasets, spec.class_name)
    files = _locate(name, cfg)
    if files is None and cfg.download:
        try:
            dataset_class(str(data_root(cfg)), train=True, download=True)
        except (OSError, RuntimeError) as error:
            reason = " ".join(str(error).split())  # torchvision's message spans lines (one per mirror tried)
            raise UserError(f"{name}: download into {data_root(cfg)} failed ({reason}); check the network") from None
        files = _locate(name, cfg)
    if files is None:
        looked = [str(folder) for folder in _folders(name, cfg)]
        raise not_found(name, looked, how_to_get)

    def part(prefix: str) -> ImageSet:
        images = _read(files[f"{prefix}-images-idx3-ubyte"], read_image_file)
        labels = _read(files[f"{prefix}-labels-idx1-ubyte"], read_label_file)
        if len(images) != len(labels):
            raise UserError(f"{name}: {prefix} has {len(images)} images but {len(labels)} labels; replace the files")
        return ImageSet(images.unsqueeze(1).contiguous(), labels.long())  # (N, 28, 28) -> (N, 1, 28, 28)

    return DataBundle(name, part("train"), part("t10k"), list(dataset_class.classes), flip=spec.flip)


def status(name: str, cfg: DataConfig) -> DatasetStatus:
    spec = _SETS[name]
    looked = [str(folder) for folder in _folders(name, cfg)]
    found = _locate(name, cfg) is not None
    return DatasetStatus(name, found, looked, spec.how_to_get.format(root=data_root(cfg)), spec.description)
