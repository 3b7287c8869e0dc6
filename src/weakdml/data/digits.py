"""scikit-learn's 8x8 handwritten digits (1,797 images, shipped with scikit-learn): the offline default."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from weakdml.config import DataConfig
from weakdml.data.holdout import fixed_holdout
from weakdml.data.status import DatasetStatus
from weakdml.data.types import DataBundle, ImageSet

DESCRIPTION = "scikit-learn's 1,797 8x8 grey digits, fixed stratified 80/20 split"
HOW_TO_GET = "ships with scikit-learn: nothing to get"


def load(cfg: DataConfig) -> DataBundle:
    """Digits as uint8 (N, 1, 8, 8), values 0..16 scaled to 0..255, split 80/20 with a fixed seed."""
    raw = load_digits()
    pixels = np.round(raw.images * (255.0 / 16.0)).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)  # (N, 8, 8) -> (N, 1, 8, 8)
    everything = ImageSet(images, torch.from_numpy(raw.target).long())
    train, test = fixed_holdout(everything.labels)
    classes = [str(c) for c in range(10)]
    return DataBundle("digits", everything.subset(train), everything.subset(test), classes, flip=False)


def status(cfg: DataConfig) -> DatasetStatus:
    return DatasetStatus("digits", True, ["scikit-learn"], HOW_TO_GET, DESCRIPTION)
