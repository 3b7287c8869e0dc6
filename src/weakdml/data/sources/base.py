"""What every image source is: labels, one image shape, and uint8 batches loaded by index; plus the subset view."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class ImageSource(Protocol):
    """Images that are loaded batch by batch, so that a data set need not fit in memory.

    ``labels`` is (N,) long, -1 where no label is known; every image has the same ``shape`` (C, H, W).
    """

    labels: torch.Tensor

    @property
    def shape(self) -> tuple[int, int, int]: ...

    def __len__(self) -> int: ...

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W): the images at ``indices`` (B,), in that order."""
        ...

    def subset(self, indices: torch.Tensor) -> ImageSource:
        """The images at ``indices`` as a source of their own, without copying image data."""
        ...


def checked(indices: torch.Tensor, size: int) -> torch.Tensor:
    """``indices`` as a 1-d long tensor, every one in [0, size): an IndexError otherwise (no negative wrap-around, so
    that every source treats a bad index alike)."""
    indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= size):
        bad = indices[(indices < 0) | (indices >= size)][0]
        raise IndexError(f"image index {int(bad)} out of range for a source of {size} images")
    return indices


def checked_labels(labels: torch.Tensor, size: int) -> torch.Tensor:
    """``labels`` as (size,) long, or a ValueError that gives the shapes."""
    labels = torch.as_tensor(labels)
    if labels.shape != (size,):
        raise ValueError(f"labels must have shape ({size},), got {tuple(labels.shape)}")
    return labels.long()


class SourceView:
    """The images of ``base`` at ``indices``: loads go through to ``base``; only labels and indices are copied."""

    def __init__(self, base: ImageSource, indices: torch.Tensor) -> None:
        self.base = base
        self.indices = checked(indices, len(base))
        self.labels = base.labels[self.indices]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.base.shape

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        return self.base.load(self.indices[checked(indices, len(self))])

    def subset(self, indices: torch.Tensor) -> SourceView:
        return SourceView(self.base, self.indices[checked(indices, len(self))])
