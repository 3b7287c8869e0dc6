"""scripts/fashion_tuples.py: the many-class retrieval folder of the IAA study (docs/results.md)."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
from PIL import Image

from weakdml.config import build_config
from weakdml.data.prepare import load_bundle

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("fashion_tuples", ROOT / "scripts" / "fashion_tuples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_splits_are_class_disjoint_and_cover_their_tuples():
    tuples = _script()
    train, test = tuples.split_tuples(3, "items", np.random.default_rng(0))
    assert len(train) == len(test) == 125
    assert {item for t in train for item in t} == set(range(5))
    assert {item for t in test for item in t} == set(range(5, 10))
    train, test = tuples.split_tuples(2, "combinations", np.random.default_rng(0))
    assert len(train) == len(test) == 50 and not set(train) & set(test)
    assert sorted(train + test) == list(itertools.product(range(10), repeat=2))


def test_each_image_is_images_of_its_tuples_classes_side_by_side_and_the_folder_is_a_retrieval_set(tmp_path):
    tuples = _script()
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 3)
    images = (labels[:, None, None] * 20 + rng.integers(0, 5, (30, 28, 28))).astype(np.uint8)  # a class's level
    train, test = tuples.split_tuples(2, "combinations", rng)
    for side, chosen in (("train", train[:6]), ("test", test[:4])):
        assert tuples.write_classes(images, labels, chosen, 3, rng, tmp_path / side) == 3 * len(chosen)
    for folder in (tmp_path / "train").iterdir():
        for file in folder.iterdir():
            strip = np.asarray(Image.open(file))
            assert strip.shape == (28, 56)
            assert [int(strip[:, 28 * k:28 * (k + 1)].mean() // 20) for k in range(2)] == [int(c) for c in folder.name]
    cfg = build_config(None, {"dataset": "folder", "data_root": str(tmp_path), "class_disjoint": True})
    bundle = load_bundle(cfg)
    assert bundle.task == "retrieval" and len(bundle.classes) == 6 and len(bundle.test_classes) == 4
    assert tuple(bundle.train.images.shape[1:]) == (1, 28, 56)
