"""Seeded, stratified splits of a training pool into labelled / validation / unlabelled parts, saved as JSON.

The split is a pure function of (labels, seed, fraction or per-class count, validation fraction): it uses numpy's
PCG64 generator, whose stream is the same on every machine, so the same seed gives the same split everywhere.
Validation images are carved from the labelled part (for model selection) and are not trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from weakdml.atomic import write_text_atomic
from weakdml.data.sources import ImageSet, ImageSource
from weakdml.errors import UserError

SPLIT_FORMAT = 2  # 1: the fingerprint covers the labels only (older files, still accepted); 2: also the images
log = logging.getLogger("weakdml")


@dataclass
class Split:
    """Indices into the training pool. ``labeled`` is used for training with labels, ``val`` for model selection,
    ``unlabeled`` only without labels. ``pool_fingerprint`` (of the labels) and ``images_fingerprint`` (of the
    images; None in a format-1 file) tie the split to the data it was made for."""

    dataset: str
    seed: int
    labeled: list[int]
    val: list[int]
    unlabeled: list[int]
    pool_size: int
    pool_fingerprint: str
    images_fingerprint: str | None = None

    def save(self, path: Path) -> None:
        split_format = 1 if self.images_fingerprint is None else SPLIT_FORMAT
        write_text_atomic(path, json.dumps({"format": split_format, **asdict(self)}))

    @classmethod
    def load(cls, path: Path) -> Split:
        path = Path(path) / "split.json" if Path(path).is_dir() else Path(path)  # a run directory's split
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"split file {path} not found") from None
        except ValueError:
            raise UserError(f"{path} is not a weakdml split file (not JSON); make one with `weakdml split`") from None
        return _validated(raw, path)

    def check_matches(self, dataset: str, labels: torch.Tensor, images: ImageSource | torch.Tensor) -> None:
        """Refuse a split made for other data: a different name, size, label vector or (format 2) images."""
        if self.dataset != dataset or self.pool_size != len(labels) or self.pool_fingerprint != fingerprint(labels):
            raise UserError(
                f"the split was made for data set '{self.dataset}' ({self.pool_size} training images), which does not "
                f"match '{dataset}' ({len(labels)} training images): if the data changed since, restore it; for "
                f"other data make a new split with `weakdml split`"
            )
        if self.images_fingerprint is not None and self.images_fingerprint != images_fingerprint(images):
            raise UserError(
                f"the split was made for other images of '{dataset}' (its labels match, the images or their size "
                f"{'x'.join(map(str, tuple(images.shape)[-3:]))} do not; was --input-size the same?): if the data "
                f"changed since, restore it; for other data make a new split with `weakdml split`"
            )


def _validated(raw: object, path: Path) -> Split:
    """The split in a loaded JSON object, every field checked: a damaged or hand-edited file must not leak labels
    (overlapping parts) or train on what it does not say."""
    def bad(what: str) -> UserError:
        return UserError(f"{path} is not a weakdml split file: {what}; make a new one with `weakdml split`")

    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(raw, dict):
        raise bad("it holds no mapping of fields")
    split_format = raw.get("format")
    if not is_int(split_format) or not 1 <= split_format <= SPLIT_FORMAT:
        raise bad(f"unknown format {split_format!r} (this weakdml reads formats 1 to {SPLIT_FORMAT})")
    names = [f.name for f in fields(Split)]
    required = set(names) - ({"images_fingerprint"} if split_format == 1 else set())
    if missing := sorted(required - set(raw)):
        raise bad(f"it lacks {', '.join(missing)}")
    if unknown := sorted(set(raw) - set(names) - {"format"}):
        raise bad(f"unknown field(s) {', '.join(unknown)}")
    if not isinstance(raw["dataset"], str) or not isinstance(raw["pool_fingerprint"], str):
        raise bad("'dataset' and 'pool_fingerprint' must be text")
    if not isinstance(raw.get("images_fingerprint"), str) and split_format > 1:
        raise bad("'images_fingerprint' must be text")
    for name in ("seed", "pool_size"):
        if not is_int(raw[name]) or raw[name] < 0:
            raise bad(f"'{name}' must be a non-negative integer, got {raw[name]!r}")
    size, seen = raw["pool_size"], set()
    for name in ("labeled", "val", "unlabeled"):
        indices = raw[name]
        if not isinstance(indices, list) or not all(is_int(i) for i in indices):
            raise bad(f"'{name}' must be a list of image indices (integers), got {str(indices)[:40]}")
        if indices and (min(indices) < 0 or max(indices) >= size):
            raise UserError(f"the split names images outside 0..{size - 1}: the file was edited or is damaged; make "
                            f"a new one with `weakdml split`")
        if len(set(indices)) != len(indices) or seen & set(indices):
            raise bad(f"'{name}' repeats images listed before (an image is in at most one part: labelled, "
                      f"validation or unlabelled)")
        seen |= set(indices)
    return Split(**{name: raw.get(name) for name in names})


def fingerprint(labels: torch.Tensor) -> str:
    """A short hash of the pool's label vector: equal pools give equal fingerprints."""
    return hashlib.sha256(labels.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def images_fingerprint(images: ImageSource | torch.Tensor, sample: int = 1024) -> str:
    """A short hash of a source's images (or of uint8 (N, C, H, W)): their count and shape and every k-th image's
    bytes (about ``sample`` images, so that 70,000 images, in memory or on disk, are hashed in milliseconds)."""
    if isinstance(images, torch.Tensor):
        images = ImageSet(images, torch.zeros(len(images)))
    step = max(1, len(images) // sample)
    digest = hashlib.sha256(repr((len(images), *images.shape)).encode())
    digest.update(images.load(torch.arange(0, len(images), step)).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def make_split(
    dataset: str,
    labels: torch.Tensor,
    seed: int,
    labeled_fraction: float = 0.1,
    labels_per_class: int | None = None,
    val_fraction: float = 0.2,
    val_classes: int = 0,
    images: ImageSource | torch.Tensor | None = None,
) -> Split:
    """Stratified split: per class, a shuffled share is labelled (at least one image, unless the share is 0), the rest
    unlabelled; then a share of each class's labelled images (rounded, at least one where the class has two or more)
    is validation. With ``val_classes``, that many classes (drawn with the seed) are validation instead, all their
    images, and no other class gives up any (validation on classes never trained on, as retrieval needs).
    ``images`` (the pool's, uint8 (N, C, H, W)) are fingerprinted too, so that the split is only used with them.
    A class with fewer images than ``labels_per_class`` is labelled whole, with a warning."""
    rng = np.random.Generator(np.random.PCG64(seed))
    labels_np = labels.numpy()
    classes, counts = np.unique(labels_np, return_counts=True)
    if not 0 <= val_classes < len(classes):
        raise UserError(f"--val-classes {val_classes} must leave at least one of the {len(classes)} classes to train "
                        f"on")
    if labels_per_class is not None and (short := counts < labels_per_class).any():
        listed = ", ".join(f"{c} ({n})" for c, n in zip(classes[short][:10], counts[short][:10]))
        log.warning(f"--labels-per-class {labels_per_class} is more than {short.sum()} class(es) hold; all their "
                    f"images are labelled: class (images) {listed}")
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
    return Split(dataset, seed, sorted(labeled), sorted(val), sorted(unlabeled), len(labels), fingerprint(labels),
                 None if images is None else images_fingerprint(images))
