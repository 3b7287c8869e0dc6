"""Loading local pretrained weights (no hub, no download): a state dict file, checked key by key."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from weakdml.errors import UserError


def load_pretrained(backbone: nn.Module, path: str) -> str:
    """Load a state dict into ``backbone`` (``weights_only=True``); keys of a classifier ``fc.*`` are ignored and a
    ``state_dict``/``model`` wrapper and ``module.``/``backbone.`` prefixes are unwrapped. Returns a one-line report;
    raises UserError when nothing matches or shapes disagree."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"pretrained weights {path} not found (give a local .pt/.pth state dict)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"cannot read pretrained weights {path}: {type(error).__name__}: {error}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state dict")
    cleaned = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone."):
            key = key.removeprefix(prefix)
        if not key.startswith("fc."):
            cleaned[key] = value
    own = backbone.state_dict()
    bad_shapes = [k for k in cleaned if k in own and own[k].shape != cleaned[k].shape]
    if bad_shapes:
        raise UserError(f"{path}: shapes differ for {len(bad_shapes)} tensors (first: {bad_shapes[0]} "
                        f"{tuple(cleaned[bad_shapes[0]].shape)} vs {tuple(own[bad_shapes[0]].shape)}); wrong backbone?")
    matched = set(cleaned) & set(own)
    if not matched:
        raise UserError(f"{path}: none of its keys match the backbone; wrong backbone or file?")
    result = backbone.load_state_dict(cleaned, strict=False)
    return (f"loaded {path}: {len(matched)}/{len(own)} tensors, "
            f"missing {len(result.missing_keys)}, unexpected {len(result.unexpected_keys)}"
            + (f" (missing e.g. {result.missing_keys[0]})" if result.missing_keys else ""))
