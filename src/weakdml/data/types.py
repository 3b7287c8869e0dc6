"""In-memory image data: uint8 tensors, so that a whole data set is augmented per batch, not per image in Python."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageSet:
    """Images as a uint8 tensor (N, C, H, W) with integer labels (N,); label -1 means "no label known"."""

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

    def subset(self, indices: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices])


@dataclass
class DataBundle:
    """What a dataset loader returns: a labelled training pool, a test set and optionally extra unlabelled images.

    ``train`` is the pool that splits divide into labelled / validation / unlabelled parts. ``unlabeled`` holds images
    that never had labels (an ``--unlabeled-dir`` folder, STL-10's unlabelled split); their labels are all -1.
    ``flip`` says whether horizontal flips preserve the classes (False for digits and letters).
    """

    name: str
    train: ImageSet
    test: ImageSet
    classes: list[str]
    unlabeled: ImageSet | None = None
    flip: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]


@dataclass
class TrainData:
    """The parts of a split a method may train on; validation and test stay with the engine. The unlabelled part's
    labels are all -1 (set when the split is applied), so training code cannot read them."""

    labeled: ImageSet
    unlabeled: ImageSet
    num_classes: int
    flip: bool
