"""Full precision inside mixed-precision training: what must not run in autocast's lower precision.

The trainer runs a method's step under autocast (bfloat16 or float16 on CUDA, with ``--amp``). Image augmentation
is data preparation, not network arithmetic: under autocast its convolutions (the blur) and matrix products
(RandAugment's sampling grids) would return half-precision pixels that no longer fit the float32 batch they are
written into, or move pixels by rounding. Distances that rank neighbours lose their order in half precision. These
run with autocast turned off, in their inputs' precision.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")


def full_precision(device: torch.device) -> AbstractContextManager:
    """Autocast off on ``device`` (older torch has no MPS autocast: nothing to turn off there)."""
    return torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda") else nullcontext()


def in_full_precision(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn(tensor, ...)`` runs with autocast off on its first argument's device."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with full_precision(args[0].device):  # type: ignore[attr-defined]
            return fn(*args, **kwargs)

    return wrapper
