"""Image folders: ``train/<class>/*`` and ``test/<class>/*`` (the torchvision ImageFolder / MbDML layout).

Either ``--data-root ROOT`` holding ``train`` (or ``Train``) and ``test`` (or ``Test``, ``val``, ``Val``,
``validation``, ``Validation``), or ``--train-dir`` and ``--test-dir`` separately. Class names are the sorted
subfolder names of the training folder; the test folder may hold a subset of them, or, with ``--class-disjoint``,
classes of its own (a retrieval set: test classes are searched, never trained on).
"""

from __future__ import annotations

from pathlib import Path

import torch

from weakdml.config import DataConfig
from weakdml.data.file_sources import lazy_sources
from weakdml.data.images import extensions, header_shape, list_images, read_images
from weakdml.data.memory import check_image_memory
from weakdml.data.status import DatasetStatus
from weakdml.data.types import DataBundle, ImageSet
from weakdml.errors import UserError

TRAIN_NAMES = ("train", "Train")
TEST_NAMES = ("test", "Test", "val", "Val", "validation", "Validation")
DESCRIPTION = "your own images as <root>/train/<class>/* and <root>/test/<class>/* (any common format)"
HOW_TO_GET = (
    "arrange images as ROOT/train/<class>/* and ROOT/test/<class>/* and pass --data-root ROOT, "
    "or pass --train-dir and --test-dir"
)


def _pick(root: Path, names: tuple[str, ...]) -> Path:
    return next((root / name for name in names if (root / name).is_dir()), root / names[0])


def _folders(cfg: DataConfig) -> tuple[Path, Path]:
    """(train folder, test folder) from the flags; they may not exist."""
    if cfg.train_dir is None and cfg.data_root is None:
        raise UserError(f"the folder dataset needs a location: {HOW_TO_GET}")
    if cfg.train_dir is not None and cfg.test_dir is None and cfg.data_root is None:
        raise UserError("--train-dir needs --test-dir too (a folder of test images as <dir>/<class>/*)")
    root = Path(cfg.data_root).expanduser() if cfg.data_root else None
    train = Path(cfg.train_dir).expanduser() if cfg.train_dir else _pick(root, TRAIN_NAMES)  # type: ignore[arg-type]
    test = Path(cfg.test_dir).expanduser() if cfg.test_dir else _pick(root, TEST_NAMES)  # type: ignore[arg-type]
    return train, test


def class_images(folder: Path, suffixes: tuple[str, ...], role: str) -> dict[str, list[Path]]:
    """Images per class subfolder (sorted names); classes without images are left out."""
    if not folder.is_dir():
        raise UserError(f"{role} folder {folder} not found; {HOW_TO_GET}")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise UserError(f"{role} folder {folder} has no class subfolders; put images in {folder}/<class>/")
    per_class = {sub.name: list_images(sub, suffixes) for sub in subfolders}
    per_class = {name: paths for name, paths in per_class.items() if paths}
    if not per_class:
        raise UserError(
            f"{role} folder {folder} holds no images with extension {', '.join(suffixes)} in its "
            "class subfolders; add images or change --im-ext"
        )
    return per_class


def load(cfg: DataConfig) -> DataBundle:
    """Both folders read in one pass, so train and test share channels (RGB if any image is colour) and size."""
    train_dir, test_dir = _folders(cfg)
    suffixes = extensions(cfg.im_ext)
    train, test = class_images(train_dir, suffixes, "training"), class_images(test_dir, suffixes, "test")
    classes = sorted(train)
    unknown = sorted(set(test) - set(train))
    retrieval = bool(unknown) and cfg.class_disjoint  # test classes of their own: searched, not classified
    if unknown and not retrieval:
        empty = [name for name in unknown if (train_dir / name).is_dir()]
        raise UserError(
            f"training folder {train_dir}/{empty[0]} holds no images: add some, or remove it and {test_dir}/{empty[0]}"
            if empty else f"test folder {test_dir} has classes not in training folder {train_dir}: "
            f"{', '.join(unknown[:5])}; rename or remove them, or add --class-disjoint for retrieval on unseen classes"
        )
    if len(classes) < 2:
        raise UserError(f"training folder {train_dir} has one class ({classes[0]}); classification needs at least 2 "
                        f"class subfolders")
    test_classes = sorted(test) if retrieval else classes
    paths, labels = [], []
    for part, names in ((train, classes), (test, test_classes)):
        for name, files in sorted(part.items()):
            paths += files
            labels += [names.index(name)] * len(files)
    labels_t = torch.tensor(labels)
    n_train = sum(len(files) for files in train.values())
    sides = ((paths[:n_train], labels_t[:n_train]), (paths[n_train:], labels_t[n_train:]))
    if cfg.cache_dir or cfg.decode_on_load:
        parts = lazy_sources(sides, header_shape(paths, cfg.input_size), cfg)
    else:
        if cfg.input_size:
            check_image_memory(len(paths), 3, cfg.input_size, cfg.input_size)  # 3: at most, before reading says
        images = read_images(paths, size=cfg.input_size)
        parts = [ImageSet(images[:n_train], labels_t[:n_train]), ImageSet(images[n_train:], labels_t[n_train:])]
    return DataBundle(cfg.dataset, parts[0], parts[1], classes, task="retrieval" if retrieval else "classification",
                      test_classes=test_classes if retrieval else None)


def status(cfg: DataConfig) -> DatasetStatus:
    try:
        train, test = _folders(cfg)
    except UserError:
        return DatasetStatus("folder", False, [], HOW_TO_GET, DESCRIPTION)
    return DatasetStatus("folder", train.is_dir() and test.is_dir(), [str(train), str(test)], HOW_TO_GET, DESCRIPTION)
