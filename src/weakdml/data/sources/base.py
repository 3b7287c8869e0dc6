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
    """Images ``indices`` of one or more sources laid end to end, with their labels or ``labels`` instead; loads go
    through to the sources, so a view costs no image memory (the parts of a split, the unlabelled pool)."""

    def __init__(self, parts: list[tuple[ImageSource, torch.Tensor]], labels: torch.Tensor | None = None) -> None:
        self.parts = [(source, checked(indices, len(source))) for source, indices in parts]
        self.parts = [(source, indices) for source, indices in self.parts if len(indices)]
        shapes = {tuple(source.shape) for source, _ in parts}
        if len(shapes) > 1:
            raise ValueError(f"a view's sources must share one image shape, got {sorted(shapes)}")
        self._shape = next(iter(shapes)) if shapes else (1, 1, 1)
        own = [source.labels[indices] for source, indices in self.parts]
        n = sum(len(indices) for _, indices in self.parts)
        self.labels = (torch.cat(own) if own else torch.zeros(0, dtype=torch.long)) if labels is None else \
            checked_labels(labels, n)
        self.offsets = torch.tensor([0] + [len(indices) for _, indices in self.parts]).cumsum(0)  # part starts

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        indices = checked(indices.cpu(), len(self))
        if len(self.parts) == 1:
            source, own = self.parts[0]
            return source.load(own[indices])
        part = torch.bucketize(indices, self.offsets[1:], right=True)  # (B,) the part each index falls in
        out = torch.empty((len(indices), *self.shape), dtype=torch.uint8)
        for p in part.unique().tolist():
            rows = torch.nonzero(part == p).flatten()
            source, own = self.parts[p]
            out[rows] = source.load(own[indices[rows] - self.offsets[p]])
        return out


def view(source: ImageSource, indices: torch.Tensor | list[int], labels: torch.Tensor | None = None) -> SourceView:
    """Images ``indices`` of ``source`` (with ``labels`` instead of their own, if given), without copying them."""
    return SourceView([(source, torch.as_tensor(indices, dtype=torch.long))], labels)


def unlabeled(*parts: tuple[ImageSource, torch.Tensor]) -> SourceView:
    """The given images of the given sources, end to end, with every label -1."""
    n = sum(len(indices) for _, indices in parts)
    return SourceView(list(parts), torch.full((n,), -1, dtype=torch.long))


def all_images(source: ImageSource, batch_size: int = 4096) -> torch.Tensor:
    """Every image of a source as one uint8 tensor (for small sources: plots, statistics, fingerprints)."""
    images = getattr(source, "images", None)
    if isinstance(images, torch.Tensor):
        return images
    index = torch.arange(len(source))
    if not len(source):
        return torch.zeros((0, *source.shape), dtype=torch.uint8)
    return torch.cat([source.load(index[i:i + batch_size]) for i in range(0, len(source), batch_size)])
