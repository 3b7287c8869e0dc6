"""Device choice and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from weakdml.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for but MPS is not available; use --device cpu")
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state(device: torch.device) -> dict:
    """The global generators that training touches (dropout, stochastic depth): the CPU's and, on a GPU, that GPU's
    (not every visible GPU's: a run resumed where fewer are visible, or on another, must find its own). Data order
    and augmentation use per-epoch generators of their own."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore ``rng_state``; a GPU's state goes to ``device`` (under torchrun every process restores the one rank 0
    saved)."""
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda")
    if device.type != "cuda" or saved is None:
        return
    if isinstance(saved, list):  # earlier checkpoints: one state per visible GPU
        index = torch.cuda.current_device() if device.index is None else device.index
        saved = saved[index] if index < len(saved) else None
    if saved is not None:
        torch.cuda.set_rng_state(saved, device)
