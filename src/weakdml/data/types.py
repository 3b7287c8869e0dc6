"""What a data set loader returns, and the parts of a split a method trains on. Images are image sources
(``weakdml.data.sources``): in memory (``ImageSet``), a decoded cache on disk, or files; parts are views of them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weakdml.data.sources import ImageSet, ImageSource


@dataclass
class DataBundle:
    """What a dataset loader returns: a labelled training pool, a test set and optionally extra unlabelled images.

    ``train`` is the pool that splits divide into labelled / validation / unlabelled parts. ``unlabeled`` holds images
    that never had labels (an ``--unlabeled-dir`` folder, STL-10's unlabelled split); their labels are all -1.
    ``flip`` says whether horizontal flips preserve the classes (False for digits and letters). ``task`` is the
    evaluation protocol the data set defines: "classification" (test classes are training classes) or "retrieval"
    (test classes ``test_classes`` are other classes, searched leave-one-out, or queries against a gallery where
    ``gallery`` marks the test images of the gallery); ``recall_ks`` are the K of its Recall@K. ``crop``: the side of
    the square crops the network sees of images stored larger (random resized crops in training, the centre at
    test: the retrieval benchmarks' 224 of 256); None: the whole images.
    """

    name: str
    train: ImageSource
    test: ImageSource
    classes: list[str]
    unlabeled: ImageSource | None = None
    flip: bool = True
    task: str = "classification"
    test_classes: list[str] | None = None
    gallery: torch.Tensor | None = None
    recall_ks: tuple[int, ...] = (1, 2, 4, 8)
    crop: int | None = None
    train_ids: list[str] | None = None  # names of the training images (e.g. file paths); default "train/<index>"

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
    labels are all -1 (set when the split is applied), so training code cannot read them. ``crop`` as the data
    set's (``DataBundle.crop``)."""

    labeled: ImageSource
    unlabeled: ImageSource
    num_classes: int
    flip: bool
    crop: int | None = None


__all__ = ["DataBundle", "ImageSet", "ImageSource", "TrainData"]
