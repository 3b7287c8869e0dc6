"""From a data config to what training uses: the data set (made class-disjoint if asked), its split, and the
labelled / validation / unlabelled / test parts as views of the loaded images (no copies). The unlabelled part's
labels are replaced by -1 here, so no later code can read them. With ``--test-as-unlabeled`` the test images join the
unlabelled part too (the transductive protocol of clustering papers: every image of the data set is clustered)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from weakdml.config import Config
from weakdml.data.registry import load_dataset
from weakdml.data.sources import ImageSource, unlabeled, view
from weakdml.data.splits import Split, make_split
from weakdml.data.types import DataBundle, TrainData
from weakdml.errors import UserError


@dataclass
class UnlabeledPart:
    """A run of the unlabelled images, in their order: ``rows`` of ``source``, named after the data set's names of
    them (``names``, indexed by row) or ``<prefix>/<row>``."""

    prefix: str
    source: ImageSource
    rows: torch.Tensor
    names: list[str] | None = None

    def ids(self) -> list[str]:
        return [self.names[i] if self.names else f"{self.prefix}/{i}" for i in self.rows.tolist()]


@dataclass
class PreparedData:
    bundle: DataBundle
    split: Split
    train: TrainData
    val: ImageSource
    test: ImageSource
    unlabeled_parts: list[UnlabeledPart]  # where each image of ``train.unlabeled`` comes from, end to end

    @property
    def task(self) -> str:
        return self.bundle.task


def split_for(cfg: Config, bundle: DataBundle, split_file: Path | None = None) -> Split:
    """The saved split when one is given, else a new seeded one; checked against the data."""
    path = split_file or (Path(cfg.data.split) if cfg.data.split else None)
    if path is not None:
        split = Split.load(path)
        split.check_matches(bundle.name, bundle.train.labels, bundle.train)
        return split
    d = cfg.data
    return make_split(bundle.name, bundle.train.labels, cfg.train.seed, d.labeled_fraction, d.labels_per_class,
                      d.val_fraction, d.val_classes, images=bundle.train)


def class_disjoint(bundle: DataBundle, train_classes: list[int]) -> DataBundle:
    """The retrieval version of a classification set: train on ``train_classes`` (default: the first half), test on
    the other classes' test images. Labels are renumbered 0.. within each side."""
    n = bundle.num_classes
    chosen = sorted(set(train_classes)) if train_classes else list(range(n // 2))
    if any(c >= n for c in chosen):
        raise UserError(f"--train-classes {chosen} name classes beyond the {n} of {bundle.name} (0..{n - 1})")
    others = [c for c in range(n) if c not in chosen]
    if len(chosen) < 2 or not others:
        raise UserError(f"--train-classes must leave at least 2 classes to train on and 1 to test on; {bundle.name} "
                        f"has {n} and {len(chosen)} were chosen")

    def keep(part: ImageSource, classes: list[int]) -> ImageSource:
        renumber = torch.full((n,), -1, dtype=torch.long)
        renumber[classes] = torch.arange(len(classes))
        rows = torch.nonzero(renumber[part.labels] >= 0).flatten()
        return view(part, rows, labels=renumber[part.labels[rows]])

    return DataBundle(bundle.name, keep(bundle.train, chosen), keep(bundle.test, others),
                      [bundle.classes[c] for c in chosen], bundle.unlabeled, bundle.flip, "retrieval",
                      [bundle.classes[c] for c in others], recall_ks=bundle.recall_ks, crop=bundle.crop)


def load_bundle(cfg: Config) -> DataBundle:
    """The data set as configured: loaded, and class-disjoint when ``--class-disjoint``/``--train-classes`` ask."""
    bundle = load_dataset(cfg.data)
    if (cfg.data.class_disjoint or cfg.data.train_classes) and bundle.task == "classification":
        bundle = class_disjoint(bundle, cfg.data.train_classes)
    return bundle


def prepare_data(cfg: Config, split_file: Path | None = None, needs_labels: bool = True) -> PreparedData:
    """Load, split and cut the data into views. ``needs_labels``: the method trains on labels, so every training
    class must keep at least one labelled image (label-free methods may use --labeled-fraction 0)."""
    bundle = load_bundle(cfg)
    split = split_for(cfg, bundle, split_file)
    labeled = view(bundle.train, split.labeled)
    present = set(labeled.labels.tolist()) | set(bundle.train.labels[split.val].tolist() if cfg.data.val_classes
                                                 else [])
    missing = sorted(set(range(bundle.num_classes)) - present)
    if needs_labels and missing:
        names = ", ".join(bundle.classes[c] for c in missing[:5])
        raise UserError(f"class(es) {names} have no labelled training image in this split; raise --labeled-fraction "
                        f"or --labels-per-class")
    parts = [UnlabeledPart("train", bundle.train, torch.tensor(split.unlabeled, dtype=torch.long), bundle.train_ids)]
    if bundle.unlabeled is not None:
        parts.append(UnlabeledPart("unlabeled", bundle.unlabeled, torch.arange(len(bundle.unlabeled))))
    if cfg.data.test_as_unlabeled:
        parts.append(UnlabeledPart("test", bundle.test, torch.arange(len(bundle.test))))
    train = TrainData(labeled, unlabeled(*[(p.source, p.rows) for p in parts]), bundle.num_classes, bundle.flip,
                      bundle.crop)
    return PreparedData(bundle, split, train, view(bundle.train, split.val), bundle.test, parts)
