"""Splits: determinism across calls and machines, stratification, disjointness, validation inside the labelled part."""

import numpy as np
import pytest
import torch

from weakdml.data.splits import Split, fingerprint, make_split
from weakdml.errors import UserError


def pool(n_per_class=(50, 30, 100, 7)):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    return labels[torch.randperm(sum(n_per_class), generator=torch.Generator().manual_seed(1))]


def test_same_seed_same_split_and_different_seed_differs():
    labels = pool()
    a, b = make_split("x", labels, seed=3), make_split("x", labels, seed=3)
    assert a == b
    assert make_split("x", labels, seed=4).labeled != a.labeled


def test_split_is_identical_on_every_machine():
    """numpy's PCG64 stream is platform-independent: this exact split is what every machine must produce."""
    split = make_split("x", torch.arange(20) % 2, seed=0, labeled_fraction=0.5, val_fraction=0.2)
    assert split.labeled == [1, 4, 6, 7, 12, 13, 14, 19]
    assert split.val == [5, 8]


def test_parts_are_disjoint_cover_the_pool_and_are_stratified():
    labels = pool()
    split = make_split("x", labels, seed=0, labeled_fraction=0.2, val_fraction=0.25)
    parts = [set(split.labeled), set(split.val), set(split.unlabeled)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == set(range(len(labels)))
    for cls, n in enumerate((50, 30, 100, 7)):
        labelled = (labels[split.labeled + split.val] == cls).sum().item()
        assert labelled == max(1, round(0.2 * n))
        if labelled >= 2:
            assert (labels[split.val] == cls).sum().item() >= 1  # every class is validated
            assert (labels[split.labeled] == cls).sum().item() >= 1  # and still trained on


def test_labels_per_class_and_full_supervision():
    labels = pool()
    split = make_split("x", labels, seed=0, labels_per_class=5, val_fraction=0.2)
    counts = np.bincount(labels[split.labeled + split.val].numpy())
    assert counts.tolist() == [5, 5, 5, 5]
    full = make_split("x", labels, seed=0, labeled_fraction=1.0, val_fraction=0.0)
    assert full.unlabeled == [] and full.val == [] and len(full.labeled) == len(labels)


def test_save_load_and_mismatch(tmp_path):
    labels = pool()
    images = torch.arange(len(labels) * 4, dtype=torch.uint8).view(-1, 1, 2, 2)
    split = make_split("x", labels, seed=0, images=images)
    split.save(tmp_path / "s.json")
    loaded = Split.load(tmp_path / "s.json")
    assert loaded == split
    loaded.check_matches("x", labels, images)
    with pytest.raises(UserError, match="does not match"):
        loaded.check_matches("y", labels, images)
    with pytest.raises(UserError, match="does not match"):
        loaded.check_matches("x", labels[:-1], images[:-1])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="not a weakdml split"):
        Split.load(tmp_path / "bad.json")
    assert fingerprint(labels) != fingerprint(labels.flip(0))
