"""Mixup (Zhang et al. 2018) as pure functions: draw λ, mix a batch with a permutation of itself, mixed loss."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def sample_lambda(alpha: float, generator: torch.Generator) -> float:
    """λ ~ Beta(α, α), drawn reproducibly from ``generator``; λ = 1 (no mixing) when α ≤ 0."""
    if alpha <= 0:
        return 1.0
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mix(images: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """x̃ = λ·x + (1 − λ)·x[perm]."""
    return lam * images + (1 - lam) * images[perm]


def mixed_loss(loss_fn: Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor, lam: float,
               perm: torch.Tensor) -> torch.Tensor:
    """λ·L(y) + (1 − λ)·L(y[perm]) for a loss of the targets; the second term is skipped when λ = 1."""
    loss = lam * loss_fn(labels)
    if lam < 1:
        loss = loss + (1 - lam) * loss_fn(labels[perm])
    return loss
