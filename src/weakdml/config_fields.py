"""How a setting is declared: its default, its help, its choices and its role, in one call beside its field."""

from __future__ import annotations

from dataclasses import field
from typing import Any

BACKBONES = ("small-cnn", "resnet18", "resnet50", "googlenet")


# What a setting is, declared once beside it. "training" settings change what is learned: a resumed run, the runs of
# one study and a student on another run's teacher must share them. "extendable" ones may only grow on resume
# (--epochs, --nst-rounds). "bookkeeping" ones change where and how a run is computed or recorded, not its result;
# "location" ones say where the data's files are (a run may be resumed or evaluated with its data moved: the split's
# fingerprint checks that it is the same data).
ROLES = ("training", "extendable", "bookkeeping", "location")


def flag(default: Any, help: str, choices: tuple[str, ...] | None = None, role: str = "training",
         earlier: dict[Any, Any] | None = None) -> Any:
    """A dataclass field of a config section (its flag is --<name>). ``earlier``: values an earlier version wrote
    for it (in a run's config.yaml), read as their present spelling."""
    assert role in ROLES, role
    metadata = {"help": help, "choices": choices, "role": role, "earlier": earlier or {}}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)
