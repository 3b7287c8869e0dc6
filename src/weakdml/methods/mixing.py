"""Mixup (Zhang et al. 2018) as pure functions: draw λ, mix a batch with a permutation of itself, mixed loss.

The permutation is of the global batch: with several processes each holds some rows, and its images' partners
(``partners``: positions in the global batch) may be another's, so ``mix`` gathers the views first."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from weakdml.engine import dist


def sample_lambda(alpha: float, generator: torch.Generator) -> float:
    """λ ~ Beta(α, α), drawn reproducibly from ``generator``; λ = 1 (no mixing) when α ≤ 0."""
    if alpha <= 0:
        return 1.0
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def sample_partners(total: int, part: slice, generator: torch.Generator) -> torch.Tensor:
    """The Mixup partners of rows ``part`` of a global batch of ``total``: their images under a random permutation
    of the batch, as positions in it (B_part,)."""
    return torch.randperm(total, generator=generator)[part]


def mix(images: torch.Tensor, lam: float, partners: torch.Tensor) -> torch.Tensor:
    """x̃ = λ·x + (1 − λ)·x_partner, for this process's rows x of a global batch (gathered from every process)."""
    return lam * images + (1 - lam) * dist.gather(images)[partners]


def mixed_loss(loss_fn: Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor, lam: float,
               partner_labels: torch.Tensor) -> torch.Tensor:
    """λ·L(y) + (1 − λ)·L(y_partner) for a loss of the targets; the second term is skipped when λ = 1."""
    loss = lam * loss_fn(labels)
    if lam < 1:
        loss = loss + (1 - lam) * loss_fn(partner_labels)
    return loss
