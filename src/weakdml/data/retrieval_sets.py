"""What the four retrieval benchmarks (CUB-200-2011, Cars196, Stanford Online Products, In-shop) share: list files
read line by line with errors that name the file and line, listed images checked to exist, labels renumbered within
each part, and images that stay on disk (decoded at every load, or once into ``--cache-dir``).

Images are stored as the papers resize them, squashed to 256 x 256 (``--input-size`` changes the side), and the
network sees 224 x 224 crops of them (7/8 of the side): random resized crops in training, the centre at test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from weakdml.config import DataConfig
from weakdml.data.file_sources import lazy_sources
from weakdml.data.status import DatasetStatus, data_root, not_found
from weakdml.data.types import DataBundle
from weakdml.errors import UserError

STORED_SIDE = 256  # the papers' Resize((256, 256))
CROP_FRACTION = 7 / 8  # 224 of 256: the side of the crops the network sees


@dataclass(frozen=True)
class Listed:
    """One image as a list file names it: its file, its class (the data set's own id) and where it was listed."""

    path: Path
    class_id: str
    where: str  # "<list file>:<line>" (or an annotation's number) for error messages


@dataclass(frozen=True)
class Benchmark:
    """What `weakdml datasets` says about a benchmark and where its files are looked for."""

    name: str
    marker: str  # a file (relative to the data set's folder) whose presence says the folder is the data set's
    folders: tuple[str, ...]  # sub-folders of --data-root looked in besides --data-root itself
    description: str
    how_to_get: str  # may hold {root}

    def candidates(self, cfg: DataConfig) -> list[Path]:
        root = data_root(cfg)
        return [root, *(root / folder for folder in self.folders)]

    def folder(self, cfg: DataConfig) -> Path:
        """The first candidate folder holding the marker file, or the one-line error saying where it looked."""
        for folder in self.candidates(cfg):
            if (folder / self.marker).is_file():
                return folder
        raise not_found(self.name, [str(folder / self.marker) for folder in self.candidates(cfg)],
                        self.how_to_get.format(root=data_root(cfg)))

    def status(self, cfg: DataConfig) -> DatasetStatus:
        found = any((folder / self.marker).is_file() for folder in self.candidates(cfg))
        return DatasetStatus(self.name, found, [str(folder / self.marker) for folder in self.candidates(cfg)],
                             self.how_to_get.format(root=data_root(cfg)), self.description)


def read_rows(path: Path, columns: int, header: int = 0) -> list[tuple[str, list[str]]]:
    """(``"<path>:<line>"``, fields) of every non-blank line of a whitespace-separated list file after its ``header``
    lines; a missing file or a line without exactly ``columns`` fields is a UserError naming the file and line."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read list file {path} ({' '.join(str(error).split())}); restore it from the data "
                        "set's archive") from None
    rows = []
    for number, line in enumerate(lines[header:], start=header + 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != columns:
            raise UserError(f"{where}: expected {columns} fields, found {len(fields)} ({line.strip()[:60]!r}); "
                            "restore the file from the data set's archive")
        rows.append((where, fields))
    return rows


def integer(value: str, where: str, what: str) -> int:
    """``value`` as an int, or a UserError naming the place and what the field is."""
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{where}: {what} must be an integer, found {value!r}; restore the file from the data set's "
                        "archive") from None


def _renumbered(images: Sequence[Listed]) -> tuple[list[str], torch.Tensor]:
    """(the part's class ids in natural order (shorter first, so "9" before "10"), each image's label 0..C-1)."""
    classes = sorted({image.class_id for image in images}, key=lambda c: (len(c), c))
    index = {class_id: i for i, class_id in enumerate(classes)}
    return classes, torch.tensor([index[image.class_id] for image in images], dtype=torch.long)


def _check(name: str, parts: dict[str, Sequence[Listed]], train: Sequence[Listed], test: Sequence[Listed]) -> None:
    """Every part has images, every listed file exists, and no class is on both sides."""
    for part, images in parts.items():
        if not images:
            raise UserError(f"{name}: the list files name no {part} image; restore them from the data set's archive")
    for image in (image for images in parts.values() for image in images):
        if not image.path.is_file():
            raise UserError(f"{name}: image {image.path} (listed at {image.where}) not found; extract the data set's "
                            "images again")
    train_classes = {image.class_id for image in train}
    shared = next((image for image in test if image.class_id in train_classes), None)
    if shared is not None:
        raise UserError(f"{name}: {shared.where} puts class {shared.class_id} in the test part, but it is a training "
                        "class too (the protocol's test classes are unseen); restore the list files")


def retrieval_bundle(name: str, cfg: DataConfig, train: Sequence[Listed], test: Sequence[Listed],
                     recall_ks: tuple[int, ...], gallery: Sequence[Listed] | None = None) -> DataBundle:
    """The bundle of a benchmark: training and test classes disjoint, labels 0.. within each side, images on disk.

    Without ``gallery`` the test images are searched leave-one-out; with it, ``test`` are the queries and the
    bundle's test part holds them followed by the gallery, which ``bundle.gallery`` marks."""
    searched = [*test, *(gallery or [])]  # the bundle's test part: the queries (or all test images), the gallery
    _check(name, {"training": train, "test": test} | ({} if gallery is None else {"gallery": gallery}), train,
           searched)
    classes, train_labels = _renumbered(train)
    test_classes, test_labels = _renumbered(searched)
    side = cfg.input_size or STORED_SIDE
    sides = [([image.path for image in train], train_labels), ([image.path for image in searched], test_labels)]
    train_source, test_source = lazy_sources(sides, (3, side, side), cfg)
    marks = None if gallery is None else torch.arange(len(searched)) >= len(test)
    return DataBundle(name, train_source, test_source, classes, task="retrieval", test_classes=test_classes,
                      gallery=marks, recall_ks=recall_ks, crop=max(1, round(side * CROP_FRACTION)))
