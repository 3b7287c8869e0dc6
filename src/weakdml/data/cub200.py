"""CUB-200-2011 from its official files: ``images.txt`` (``<image id> <path>``), ``image_class_labels.txt``
(``<image id> <class id>``) and ``images/<path>``. The retrieval protocol: classes 1-100 train, 101-200 test
(5,864 and 5,924 images), searched leave-one-out; Recall@1, 2, 4, 8."""

from __future__ import annotations

from weakdml.config import DataConfig
from weakdml.data.retrieval_sets import Benchmark, Listed, integer, read_rows, retrieval_bundle
from weakdml.data.types import DataBundle
from weakdml.errors import UserError

TRAIN_CLASSES = 100  # classes 1..100 train, 101..200 test
BENCHMARK = Benchmark(
    "cub200", "images.txt", ("CUB_200_2011",),
    "11,788 photos of 200 bird species (retrieval: classes 1-100 train, 101-200 test)",
    "download CUB_200_2011.tgz from the Caltech-UCSD Birds-200-2011 page "
    "(https://www.vision.caltech.edu/datasets/cub_200_2011/) and extract it into {root}, so that "
    "{root}/CUB_200_2011/images.txt exists",
)


def load(cfg: DataConfig) -> DataBundle:
    folder = BENCHMARK.folder(cfg)
    labels_file = folder / "image_class_labels.txt"
    classes = {}
    for where, (image_id, class_id) in read_rows(labels_file, 2):
        if image_id in classes:
            raise UserError(f"{where}: image {image_id} has a class already; restore {labels_file.name}")
        classes[image_id] = integer(class_id, where, "a class id")
    train, test, listed = [], [], set()
    for where, (image_id, path) in read_rows(folder / "images.txt", 2):
        if image_id not in classes or image_id in listed:
            raise UserError(f"{where}: image {image_id} " + ("is listed twice" if image_id in listed else
                            f"has no class in {labels_file}") + "; restore both list files")
        listed.add(image_id)
        (train if classes[image_id] <= TRAIN_CLASSES else test).append(
            Listed(folder / "images" / path, str(classes[image_id]), where))
    unlisted = next((image_id for image_id in classes if image_id not in listed), None)
    if unlisted is not None:
        raise UserError(f"{labels_file} gives a class to image {unlisted}, which {folder / 'images.txt'} does not "
                        "list; restore both list files")
    return retrieval_bundle("cub200", cfg, train, test, (1, 2, 4, 8))
