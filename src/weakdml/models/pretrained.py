"""Loading local pretrained weights (no hub, no download): a state dict file, or the backbone of a weakdml run
(e.g. ``weakdml pretrain``'s), checked key by key."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch import nn

from weakdml.config import ModelConfig
from weakdml.errors import UserError

RUN_BACKBONE = "model.backbone."  # where a run's best.pt keeps its backbone's tensors


def load_pretrained(backbone: nn.Module, path: str, model: ModelConfig | None = None, channels: int | None = None
                    ) -> str:
    """Load a state dict into ``backbone`` (``weights_only=True``); keys of a classifier ``fc.*`` are ignored and a
    ``state_dict``/``model`` wrapper and ``module.``/``backbone.`` prefixes are unwrapped. ``path`` may also be a
    run directory: its best model's backbone, refused unless its backbone, width and image channels are ``model``'s
    and ``channels``. Returns a one-line report; raises UserError when nothing matches or shapes disagree."""
    file = Path(path)
    if file.is_dir():
        return _load_into(backbone, run_backbone(file, model, channels), path)
    if not file.is_file():
        raise UserError(f"pretrained weights {path} not found (give a local .pt/.pth state dict or a run directory)")
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
    return _load_into(backbone, cleaned, path)


def run_backbone(run_dir: Path, model: ModelConfig | None = None, channels: int | None = None
                 ) -> dict[str, torch.Tensor]:
    """The backbone tensors of a run's ``best.pt``, after checking that the run's network is ``model``'s (backbone,
    width, grey images as RGB) and saw images of ``channels`` channels."""
    config, best = run_dir / "config.yaml", run_dir / "best.pt"
    if not config.is_file() or not best.is_file():
        raise UserError(f"--pretrained {run_dir} is a folder but no weakdml run with a trained model (config.yaml and "
                        f"best.pt); train or pretrain one there, or give a .pt file")
    theirs = (yaml.safe_load(config.read_text()) or {}).get("model", {})
    if model is not None:
        for name in ("backbone", "width", "grey_as_rgb"):
            if theirs.get(name) != getattr(model, name):
                raise UserError(f"--pretrained {run_dir} has --{name.replace('_', '-')} {theirs.get(name)}, this run "
                                f"{getattr(model, name)}: give the same (its backbone is loaded into this one)")
    try:
        state = torch.load(best, map_location="cpu", weights_only=True)["method"]
    except Exception as error:  # noqa: BLE001 - a damaged file is reported, not traced
        raise UserError(f"cannot read {best} ({type(error).__name__}); it may be damaged") from None
    seen = state["model.mean"].shape[1] if "model.mean" in state else None
    if channels is not None and seen is not None and seen != channels:
        raise UserError(f"--pretrained {run_dir} was trained on {seen}-channel images, these have {channels}: "
                        f"pretrain on images like these (or convert them)")
    return {k.removeprefix(RUN_BACKBONE): v for k, v in state.items() if k.startswith(RUN_BACKBONE)}


def _load_into(backbone: nn.Module, cleaned: dict[str, torch.Tensor], path: str) -> str:
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
