"""Images held in memory as one uint8 tensor (N, C, H, W): the fastest source, for data sets that fit."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weakdml.data.sources.base import checked


@dataclass
class ImageSet:
    """Images in memory as a uint8 tensor (N, C, H, W) with integer labels (N,); label -1 means "no label known"."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must have shape ({len(self.images)},), got {tuple(self.labels.shape)}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        index = checked(indices, len(self)).to(self.images.device)  # images may have been put on a GPU by a caller
        return self.images.index_select(0, index)  # several times faster than images[indices]

    def subset(self, indices: torch.Tensor) -> ImageSet:
        """A copy of the images at ``indices`` (a loader cutting its data set; a view is ``sources.view``)."""
        return ImageSet(self.images[indices], self.labels[indices])
