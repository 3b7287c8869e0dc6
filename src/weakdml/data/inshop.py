"""In-shop Clothes Retrieval (DeepFashion) from its official files: ``list_eval_partition.txt`` (the number of images,
a line of column names, then ``<image name> <item id> <train|query|gallery>``; in the folder or its ``Eval/``) and
the images it names (``img/...``, in the folder or its ``Img/``). The retrieval protocol: 3,997 training items
(25,882 images); 14,218 queries searched among a gallery of 12,612 images of 3,985 other items; Recall@1, 10, 20, 30.
"""

from __future__ import annotations

from weakdml.config import DataConfig
from weakdml.data.retrieval_sets import Benchmark, Listed, integer, read_rows, retrieval_bundle
from weakdml.data.types import DataBundle
from weakdml.errors import UserError

LIST = "list_eval_partition.txt"
PARTS = ("train", "query", "gallery")
BENCHMARK = Benchmark(
    "inshop", LIST, ("InShop", "Eval", "InShop/Eval"),
    "52,712 clothing photos of 7,982 items (retrieval: 3,997 training items; queries against a gallery of the others)",
    "download the In-shop Clothes Retrieval Benchmark of DeepFashion "
    "(https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html): put Eval/list_eval_partition.txt "
    "and the extracted Img/img.zip (a folder img/) into {root}/InShop",
)


def load(cfg: DataConfig) -> DataBundle:
    listed = BENCHMARK.folder(cfg)
    path = listed / LIST
    base = next((folder for folder in (listed, listed / "Img", listed.parent, listed.parent / "Img")
                 if (folder / "img").is_dir()), listed)  # where the image names (img/...) start
    rows = read_rows(path, 3, header=2)
    count = integer(path.read_text().split("\n", 1)[0].strip(), f"{path}:1", "the number of images")
    if count != len(rows):
        raise UserError(f"{path}:1 says {count} images, but {len(rows)} are listed; restore the file")
    parts: dict[str, list[Listed]] = {part: [] for part in PARTS}
    for where, (name, item, status) in rows:
        if status not in parts:
            raise UserError(f"{where}: evaluation status {status!r} is none of {', '.join(PARTS)}; restore the file")
        parts[status].append(Listed(base / name, item, where))
    return retrieval_bundle("inshop", cfg, parts["train"], parts["query"], (1, 10, 20, 30), parts["gallery"])
