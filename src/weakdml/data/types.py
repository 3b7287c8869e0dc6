"""Image sources and what a data set loader returns.

Training and evaluation see images through an *image source*: ``len``, ``labels`` (N,), ``shape`` (C, H, W) and
``load(indices) -> uint8 (B, C, H, W)``. ``ImageSet`` holds them in memory; ``SourceView`` picks some images of
another source (and may replace their labels), without copying any image, so that the parts of a split and the
unlabelled pool cost no memory of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class ImageSource(Protocol):
    labels: torch.Tensor  # (N,) long; -1 = no label known

    @property
    def shape(self) -> tuple[int, int, int]: ...  # (C, H, W) of every image

    def __len__(self) -> int: ...

    def load(self, indices: torch.Tensor) -> torch.Tensor: ...  # uint8 (B, C, H, W), in the order of indices


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
        return self.images[indices]

    def subset(self, indices: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices])


class SourceView:
    """Images ``indices`` of one or more sources laid end to end, with their labels or ``labels`` instead."""

    def __init__(self, parts: list[tuple[ImageSource, torch.Tensor]], labels: torch.Tensor | None = None) -> None:
        self.parts = [(source, indices.long()) for source, indices in parts if len(indices)]
        shapes = {source.shape for source, _ in parts}
        if len(shapes) > 1:
            raise ValueError(f"a view's sources must share one image shape, got {sorted(shapes)}")
        self._shape = next(iter(shapes)) if shapes else (1, 1, 1)
        own = [source.labels[indices] for source, indices in self.parts]
        self.labels = (torch.cat(own) if own else torch.zeros(0, dtype=torch.long)) if labels is None else labels
        sizes = torch.tensor([0] + [len(indices) for _, indices in self.parts])
        self.offsets = sizes.cumsum(0)  # (parts + 1,) where each part starts

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        indices = indices.cpu().long()
        part = torch.bucketize(indices, self.offsets[1:], right=True)  # (B,) which part each index falls in
        out = torch.empty((len(indices), *self.shape), dtype=torch.uint8)
        for p in part.unique().tolist():
            rows = torch.nonzero(part == p).flatten()
            source, own = self.parts[p]
            out[rows] = source.load(own[indices[rows] - self.offsets[p]])
        return out


def view(source: ImageSource, indices: torch.Tensor | list[int], labels: torch.Tensor | None = None) -> SourceView:
    """Images ``indices`` of ``source`` (with ``labels`` instead of their own, if given)."""
    return SourceView([(source, torch.as_tensor(indices, dtype=torch.long))], labels)


def unlabeled(*parts: tuple[ImageSource, torch.Tensor]) -> SourceView:
    """The given images of the given sources, end to end, with every label -1."""
    n = sum(len(indices) for _, indices in parts)
    return SourceView(list(parts), torch.full((n,), -1, dtype=torch.long))


def all_images(source: ImageSource, batch_size: int = 4096) -> torch.Tensor:
    """Every image of a source as one uint8 tensor (small sources: plots, statistics)."""
    if isinstance(source, ImageSet):
        return source.images
    index = torch.arange(len(source))
    return torch.cat([source.load(index[i:i + batch_size]) for i in range(0, len(source), batch_size)]) \
        if len(source) else torch.zeros((0, *source.shape), dtype=torch.uint8)


@dataclass
class DataBundle:
    """What a dataset loader returns: a labelled training pool, a test set and optionally extra unlabelled images.

    ``train`` is the pool that splits divide into labelled / validation / unlabelled parts. ``unlabeled`` holds images
    that never had labels (an ``--unlabeled-dir`` folder, STL-10's unlabelled split); their labels are all -1.
    ``flip`` says whether horizontal flips preserve the classes (False for digits and letters). ``task`` is the
    evaluation protocol the data set defines: "classification" (test classes are training classes) or "retrieval"
    (test classes ``test_classes`` are other classes, searched leave-one-out, or queries against a gallery where
    ``gallery`` marks the test images of the gallery); ``recall_ks`` are the K of its Recall@K.
    """

    name: str
    train: ImageSet
    test: ImageSet
    classes: list[str]
    unlabeled: ImageSet | None = None
    flip: bool = True
    task: str = "classification"
    test_classes: list[str] | None = None
    gallery: torch.Tensor | None = None
    recall_ks: tuple[int, ...] = (1, 2, 4, 8)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train.shape[0]

    @property
    def image_size(self) -> int:
        return self.train.shape[-1]


@dataclass
class TrainData:
    """The parts of a split a method may train on; validation and test stay with the engine. The unlabelled part's
    labels are all -1 (set when the split is applied), so training code cannot read them."""

    labeled: ImageSource
    unlabeled: ImageSource
    num_classes: int
    flip: bool
