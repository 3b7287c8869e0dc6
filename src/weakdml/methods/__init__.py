"""Training methods by name."""

from __future__ import annotations

from weakdml.methods.base import Batch, Method, TrainData
from weakdml.methods.nngk import NNGK

METHODS: dict[str, type[Method]] = {
    "nngk": NNGK,
}

__all__ = ["METHODS", "Batch", "Method", "TrainData"]
