"""Images held in memory as one uint8 tensor (N, C, H, W): the fastest source, for data sets that fit."""

from __future__ import annotations

import torch

from weakdml.data.sources.base import SourceView, checked, checked_labels


class MemorySource:
    """A uint8 (N, C, H, W) tensor with its labels (N,); label -1 means "no label known"."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.labels = checked_labels(labels, len(images))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        return self.images.index_select(0, checked(indices, len(self)))  # several times faster than images[indices]

    def subset(self, indices: torch.Tensor) -> SourceView:
        return SourceView(self, indices)
