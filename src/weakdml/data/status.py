"""Where data sets are looked for, and how a loader reports what it found (for `weakdml datasets` and errors)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from weakdml.config import DataConfig
from weakdml.errors import UserError

DEFAULT_ROOT = "data"  # used when no --data-root is given


@dataclass
class DatasetStatus:
    """One data set as `weakdml datasets` lists it: whether its files were found, where, and how to get them."""

    name: str
    found: bool
    looked_in: list[str]
    how_to_get: str
    description: str


def data_root(cfg: DataConfig) -> Path:
    """The folder holding the data set's files: --data-root, else ./data."""
    return Path(cfg.data_root or DEFAULT_ROOT).expanduser()


def not_found(name: str, looked_in: list[str], how_to_get: str) -> UserError:
    """The one-line error for a data set whose files are missing."""
    return UserError(f"{name}: files not found (looked in {', '.join(looked_in) or 'nowhere'}); {how_to_get}")
