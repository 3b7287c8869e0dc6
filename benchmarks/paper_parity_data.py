"""The image folders of docs/results.md, "Paper parity": a 10-class Fashion-MNIST folder (400 training and 100 test
images per class, drawn with numpy's default_rng(0) from the IDX files) in the ImageFolder layout that both weakdml
(`--dataset folder`) and the original MbDML scripts read, and the original's training folder: the labelled and
validation images of a weakdml split file (links into the first folder), since the original has no validation.

    python benchmarks/paper_parity_data.py pool OUT            # OUT/fmnist4k/{train,test}/c0..c9/*.png
    weakdml split --dataset folder --data-root OUT/fmnist4k --input-size 32 --seed 0 --out OUT/split-s0.json
    python benchmarks/paper_parity_data.py original OUT OUT/split-s0.json   # OUT/orig_train/c0..c9/*.png
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

IDX = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist


def read_idx(name: str) -> np.ndarray:
    with gzip.open(IDX / name) as handle:
        data = handle.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_classes(images: np.ndarray, labels: np.ndarray, per_class: int, folder: Path,
                  rng: np.random.Generator) -> None:
    for c in range(10):
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in sorted(rng.permutation(np.flatnonzero(labels == c))[:per_class]):
            Image.fromarray(images[i], "L").save(folder / f"c{c}" / f"{i:05d}.png")


def main(argv: list[str]) -> None:
    out = Path(argv[1])
    if argv[0] == "pool":
        rng = np.random.default_rng(0)
        write_classes(read_idx("train-images-idx3-ubyte.gz"), read_idx("train-labels-idx1-ubyte.gz"), 400,
                      out / "fmnist4k/train", rng)
        write_classes(read_idx("t10k-images-idx3-ubyte.gz"), read_idx("t10k-labels-idx1-ubyte.gz"), 100,
                      out / "fmnist4k/test", rng)
        return
    split = json.loads(Path(argv[2]).read_text())  # indices into the pool in weakdml's order: class, then file name
    train = out / "fmnist4k/train"
    pool = [(c, name) for c in sorted(os.listdir(train)) for name in sorted(os.listdir(train / c))]
    for i in split["labeled"] + split["val"]:
        c, name = pool[i]
        (out / "orig_train" / c).mkdir(parents=True, exist_ok=True)
        os.symlink((train / c / name).absolute(), out / "orig_train" / c / name)
    print(f"{len(split['labeled'])} labelled + {len(split['val'])} validation images in {out / 'orig_train'}")


if __name__ == "__main__":
    main(sys.argv[1:])
