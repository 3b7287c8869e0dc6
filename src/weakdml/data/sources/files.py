"""Image files decoded on every load: no memory and no disk beyond the files, at the cost of decoding each time
(spread over loader workers by ``data.loader.load_batches``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from weakdml.data.images import decode_image
from weakdml.data.sources.base import checked, checked_labels


class FileSource:
    """Image files with their labels, each decoded by PIL and resized to ``shape`` (C, H, W) when loaded.

    It pickles as its paths and labels, so that loader worker processes receive it cheaply.
    """

    def __init__(self, paths: Sequence[Path], labels: torch.Tensor, shape: tuple[int, int, int]) -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = checked_labels(labels, len(self.paths))
        self._shape = tuple(shape)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        arrays = [decode_image(self.paths[i], self.shape) for i in checked(indices, len(self)).tolist()]
        if not arrays:
            return torch.empty((0, *self.shape), dtype=torch.uint8)
        return torch.from_numpy(np.stack(arrays))

