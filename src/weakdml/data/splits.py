"""Seeded, stratified splits of a training pool into labelled / validation / unlabelled parts, saved as JSON.

The split is a pure function of (labels, seed, fraction or per-class count, validation fraction): it uses numpy's
PCG64 generator, whose stream is the same on every machine, so the same seed gives the same split everywhere.
Validation images are carved from the labelled part (for model selection) and are not trained on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from weakdml.errors import UserError

SPLIT_FORMAT = 1


@dataclass
class Split:
    """Indices into the training pool. ``labeled`` is used for training with labels, ``val`` for model selection,
    ``unlabeled`` only without labels. ``pool_fingerprint`` ties the split to the data it was made for."""

    dataset: str
    seed: int
    labeled: list[int]
    val: list[int]
    unlabeled: list[int]
    pool_size: int
    pool_fingerprint: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"format": SPLIT_FORMAT, **asdict(self)}))

    @classmethod
    def load(cls, path: Path) -> Split:
        path = Path(path) / "split.json" if Path(path).is_dir() else Path(path)  # a run directory's split
        try:
            raw = json.loads(path.read_text())
            raw.pop("format")
            return cls(**raw)
        except FileNotFoundError:
            raise UserError(f"split file {path} not found") from None
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path} is not a weakdml split file; make one with `weakdml split`") from None

    def check_matches(self, dataset: str, labels: torch.Tensor) -> None:
        """Refuse a split made for other data: a different name, size or label vector."""
        if self.dataset != dataset or self.pool_size != len(labels) or self.pool_fingerprint != fingerprint(labels):
            raise UserError(
                f"the split was made for data set '{self.dataset}' ({self.pool_size} training images), which does not "
                f"match '{dataset}' ({len(labels)} training images): if the data changed since, restore it; for "
                f"other data make a new split with `weakdml split`"
            )
        indices = [*self.labeled, *self.val, *self.unlabeled]
        if indices and (min(indices) < 0 or max(indices) >= self.pool_size):
            raise UserError(f"the split names images outside 0..{self.pool_size - 1}: the file was edited or is "
                            f"damaged; make a new one with `weakdml split`")


def fingerprint(labels: torch.Tensor) -> str:
    """A short hash of the pool's label vector: equal pools give equal fingerprints."""
    return hashlib.sha256(labels.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def make_split(
    dataset: str,
    labels: torch.Tensor,
    seed: int,
    labeled_fraction: float = 0.1,
    labels_per_class: int | None = None,
    val_fraction: float = 0.2,
    val_classes: int = 0,
) -> Split:
    """Stratified split: per class, a shuffled share is labelled (at least one image, unless the share is 0), the rest
    unlabelled; then a share of each class's labelled images (rounded, at least one where the class has two or more)
    is validation. With ``val_classes``, that many classes (drawn with the seed) are validation instead, all their
    images, and no other class gives up any (validation on classes never trained on, as retrieval needs)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    labels_np = labels.numpy()
    classes = np.unique(labels_np)
    if not 0 <= val_classes < len(classes):
        raise UserError(f"--val-classes {val_classes} must leave at least one of the {len(classes)} classes to train on")
    held_out = set(rng.permutation(classes)[:val_classes].tolist()) if val_classes else set()
    labeled, val, unlabeled = [], [], []
    for cls in classes:
        members = np.flatnonzero(labels_np == cls)
        members = members[rng.permutation(len(members))]
        if int(cls) in held_out:
            val.extend(members.tolist())
            continue
        n_lab = labels_per_class if labels_per_class is not None else round(labeled_fraction * len(members))
        n_lab = min(max(n_lab, 1 if labeled_fraction > 0 or labels_per_class else 0), len(members))
        n_val = round(val_fraction * n_lab)
        if val_fraction > 0 and n_lab >= 2 and not val_classes:
            n_val = min(max(n_val, 1), n_lab - 1)
        else:
            n_val = 0
        val.extend(members[:n_val].tolist())
        labeled.extend(members[n_val:n_lab].tolist())
        unlabeled.extend(members[n_lab:].tolist())
    return Split(dataset, seed, sorted(labeled), sorted(val), sorted(unlabeled), len(labels), fingerprint(labels))
