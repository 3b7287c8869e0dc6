"""Cars196 (Stanford Cars) from its official files: ``cars_annos.mat`` (a struct array ``annotations`` with fields
``relative_im_path`` and ``class``, among others) and ``car_ims/``. The retrieval protocol: classes 1-98 train,
99-196 test (8,054 and 8,131 images), searched leave-one-out whatever the file's own ``test`` flags; Recall@1, 2, 4, 8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from weakdml.config import DataConfig
from weakdml.data.retrieval_sets import Benchmark, Listed, retrieval_bundle
from weakdml.data.types import DataBundle
from weakdml.errors import UserError

TRAIN_CLASSES = 98  # classes 1..98 train, 99..196 test
BENCHMARK = Benchmark(
    "cars196", "cars_annos.mat", ("cars196", "stanford_cars"),
    "16,185 photos of 196 car models (retrieval: classes 1-98 train, 99-196 test)",
    "download car_ims.tgz and cars_annos.mat from the Stanford Cars dataset page "
    "(https://ai.stanford.edu/~jkrause/cars/"
    "car_dataset.html) into {root}/cars196 and extract car_ims.tgz there",
)


def _annotations(path: Path) -> list[tuple[str, int]]:
    """(relative image path, class) of every annotation; a file that is no such .mat is a UserError naming it."""
    try:
        annotations = np.atleast_1d(scipy.io.loadmat(str(path), squeeze_me=True)["annotations"])
        return [(str(a["relative_im_path"]), int(a["class"])) for a in annotations]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"cannot read the annotations (relative_im_path, class) of {path} ({reason}); restore the "
                        "official cars_annos.mat") from None


def load(cfg: DataConfig) -> DataBundle:
    folder = BENCHMARK.folder(cfg)
    path = folder / "cars_annos.mat"
    train, test = [], []
    for number, (relative, class_id) in enumerate(_annotations(path), start=1):
        if not 1 <= class_id <= 2 * TRAIN_CLASSES:
            raise UserError(f"{path}: annotation {number} has class {class_id}, outside 1..{2 * TRAIN_CLASSES}; "
                            "restore the official cars_annos.mat")
        image = Listed(folder / relative, str(class_id), f"{path} annotation {number}")
        (train if class_id <= TRAIN_CLASSES else test).append(image)
    return retrieval_bundle("cars196", cfg, train, test, (1, 2, 4, 8))
