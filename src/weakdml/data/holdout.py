"""A fixed test split for data sets that ship without one (digits, Flowers17 without datasplits.mat)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split

HOLDOUT_SEED = 0  # fixed on purpose: the test set must not change with the run's seed


def fixed_holdout(labels: torch.Tensor, test_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified (train indices, test indices), each sorted, identical on every call and machine."""
    indices = np.arange(len(labels))
    train, test = train_test_split(indices, test_size=test_fraction, random_state=HOLDOUT_SEED, stratify=labels.numpy())
    return torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(test))
