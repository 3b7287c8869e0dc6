"""From a data config to what training uses: the data set, its split, and the labelled / validation / unlabelled /
test parts. The unlabelled part's labels are replaced by -1 here, so no later code can read them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from weakdml.config import Config
from weakdml.data.registry import load_dataset
from weakdml.data.splits import Split, make_split
from weakdml.data.types import DataBundle, ImageSet, TrainData
from weakdml.errors import UserError


@dataclass
class PreparedData:
    bundle: DataBundle
    split: Split
    train: TrainData
    val: ImageSet
    test: ImageSet


def split_for(cfg: Config, bundle: DataBundle, split_file: Path | None = None) -> Split:
    """The saved split when one is given, else a new seeded one; checked against the data."""
    path = split_file or (Path(cfg.data.split) if cfg.data.split else None)
    if path is not None:
        split = Split.load(path)
        split.check_matches(bundle.name, bundle.train.labels, bundle.train.images)
        return split
    d = cfg.data
    return make_split(bundle.name, bundle.train.labels, cfg.train.seed, d.labeled_fraction, d.labels_per_class,
                      d.val_fraction, images=bundle.train.images)


def prepare_data(cfg: Config, split_file: Path | None = None) -> PreparedData:
    bundle = load_dataset(cfg.data)
    split = split_for(cfg, bundle, split_file)
    labeled = bundle.train.subset(torch.tensor(split.labeled, dtype=torch.long))
    missing = sorted(set(range(bundle.num_classes)) - set(labeled.labels.tolist()))
    if missing:
        names = ", ".join(bundle.classes[c] for c in missing[:5])
        raise UserError(f"class(es) {names} have no labelled training image in this split; raise --labeled-fraction "
                        f"or --labels-per-class")
    val = bundle.train.subset(torch.tensor(split.val, dtype=torch.long))
    unlabeled_images = [bundle.train.images[torch.tensor(split.unlabeled, dtype=torch.long)]]
    if bundle.unlabeled is not None:
        unlabeled_images.append(bundle.unlabeled.images)
    images = torch.cat(unlabeled_images)
    unlabeled = ImageSet(images, torch.full((len(images),), -1, dtype=torch.long))
    train = TrainData(labeled, unlabeled, bundle.num_classes, bundle.flip)
    return PreparedData(bundle, split, train, val, bundle.test)
