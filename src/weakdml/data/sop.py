"""Stanford Online Products from its official files: ``Ebay_train.txt`` and ``Ebay_test.txt`` (a header line, then
``<image id> <class id> <super-class id> <path>``) with the images under the data set's folder. The retrieval
protocol: 11,318 training classes (59,551 images), 11,316 test classes (60,502 images) searched leave-one-out;
Recall@1, 10, 100, 1000. At 256 px the 120,053 images take 23.6 GB: train through --cache-dir (read batch by batch)."""

from __future__ import annotations

from pathlib import Path

from weakdml.config import DataConfig
from weakdml.data.retrieval_sets import Benchmark, Listed, integer, read_rows, retrieval_bundle
from weakdml.data.types import DataBundle

BENCHMARK = Benchmark(
    "sop", "Ebay_train.txt", ("Stanford_Online_Products",),
    "120,053 product photos of 22,634 products (retrieval: 11,318 training products, 11,316 test products)",
    "download Stanford_Online_Products.zip from the Stanford Online Products page (https://cvgl.stanford.edu/projects/"
    "lifted_struct/) and extract it into {root}, so that {root}/Stanford_Online_Products/Ebay_train.txt exists",
)


def _listed(folder: Path, name: str) -> list[Listed]:
    """The images of one list file (its header line skipped)."""
    images = []
    for where, (_, class_id, _, path) in read_rows(folder / name, 4, header=1):
        images.append(Listed(folder / path, str(integer(class_id, where, "a class id")), where))
    return images


def load(cfg: DataConfig) -> DataBundle:
    folder = BENCHMARK.folder(cfg)
    return retrieval_bundle("sop", cfg, _listed(folder, "Ebay_train.txt"), _listed(folder, "Ebay_test.txt"),
                            (1, 10, 100, 1000))
