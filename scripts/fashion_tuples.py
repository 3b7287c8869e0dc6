"""Write a many-class retrieval folder built from Fashion-MNIST: each class is an ordered tuple of clothing classes,
each image that many Fashion-MNIST images of those classes side by side (28 px high, grey png).

Two ways to split the classes, both class-disjoint and with training images drawn from Fashion-MNIST's training
images, test images from its test images:
- ``items``: training classes are the tuples of clothing classes 0-4 (T-shirt, trouser, pullover, dress, coat),
  test classes the tuples of 5-9 (sandal, shirt, sneaker, bag, ankle boot): nothing seen in training is retrieved.
- ``combinations``: the tuples of all ten clothing classes, a seeded random half trained on, the other half
  retrieved: new combinations of familiar parts, as unseen bird species share parts with seen ones in CUB.
Neighbouring classes differ in one slot: a fine-grained set with many classes and a few images each, the regime of
the IAA paper's benchmarks that a ten-class set cannot reach.

Usage: .venv/bin/python scripts/fashion_tuples.py OUT [--slots 3] [--split items] [--per-class 30] [--seed 0]
Then:  weakdml train --dataset folder --data-root OUT --class-disjoint --augment none ...
(no flips: a flipped image is another tuple).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from PIL import Image

from weakdml.config import DataConfig
from weakdml.data.registry import load_dataset


def write_classes(images: np.ndarray, labels: np.ndarray, tuples: list[tuple[int, ...]], per_class: int,
                  rng: np.random.Generator, out: Path) -> int:
    """Write ``per_class`` images of every tuple into ``out/<tuple>/``; returns the number of images written."""
    by_item = {item: np.flatnonzero(labels == item) for item in range(10)}
    for classes in tuples:
        folder = out / "".join(map(str, classes))
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            strip = np.concatenate([images[rng.choice(by_item[item])] for item in classes], axis=1)
            Image.fromarray(strip).save(folder / f"{n:03d}.png")
    return len(tuples) * per_class


def split_tuples(slots: int, split: str, rng: np.random.Generator) -> tuple[list, list]:
    if split == "items":
        return list(itertools.product(range(5), repeat=slots)), list(itertools.product(range(5, 10), repeat=slots))
    every = list(itertools.product(range(10), repeat=slots))
    order = rng.permutation(len(every))
    half = len(every) // 2
    return sorted(every[i] for i in order[:half]), sorted(every[i] for i in order[half:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--slots", type=int, default=3, choices=(2, 3))
    parser.add_argument("--split", default="items", choices=("items", "combinations"))
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty; choose a new folder")
    bundle = load_dataset(DataConfig(dataset="fashion-mnist"))
    rng = np.random.default_rng(args.seed)
    train_tuples, test_tuples = split_tuples(args.slots, args.split, rng)
    for part, side, tuples in ((bundle.train, "train", train_tuples), (bundle.test, "test", test_tuples)):
        count = write_classes(part.images[:, 0].numpy(), part.labels.numpy(), tuples, args.per_class, rng,
                              args.out / side)
        print(f"{side}: {count} images of {len(tuples)} classes in {args.out / side}")


if __name__ == "__main__":
    main()
