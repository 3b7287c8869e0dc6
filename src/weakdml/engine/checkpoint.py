"""Checkpoints: written atomically (temporary file, fsync, rename), loaded with ``weights_only=True``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from weakdml.atomic import atomic_writer
from weakdml.errors import UserError


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` so that ``path`` is always either the old or the new complete file, never a torn one.
    Serialised in memory first: torch's writer turns an error of the file (a full disk) into an unclear
    RuntimeError, a plain write keeps the OSError."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_writer(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - a damaged file is reported, not traced
        raise UserError(f"checkpoint {path} cannot be read ({type(error).__name__}); it may be damaged") from None


def load_weights(module: torch.nn.Module, weights: dict[str, Any], path: Path) -> None:
    """``module.load_state_dict(weights)``, with a checkpoint of another architecture summarised in one line (torch's
    own error lists every mismatching tensor)."""
    try:
        module.load_state_dict(weights)
    except RuntimeError as error:
        if "Error(s) in loading state_dict" not in str(error):
            raise
        own = module.state_dict()
        missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        resized = [k for k in set(own) & set(weights) if hasattr(weights[k], "shape")
                   and tuple(weights[k].shape) != tuple(own[k].shape)]
        parts = [f"{len(names)} {what} (e.g. {min(names)})" for names, what in
                 ((missing, "missing"), (unexpected, "unexpected"), (resized, "of another shape")) if names]
        raise UserError(f"checkpoint {path} was saved from another model than this run's settings build "
                        f"({'; '.join(parts) or 'tensors differ'}): --backbone, --width, --embedding-dim or the "
                        f"method differ; use the run directory it came from") from None
