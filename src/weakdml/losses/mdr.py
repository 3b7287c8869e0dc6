"""MDR: multi-level distance regularisation (Kim & Park, "Multi-level Distance Regularization for Deep Metric
Learning", AAAI 2021), as a loss term in pytorch-metric-learning's call convention.

    L = weight · mean_{i≠j} min_l |(d_ij - μ̄) / σ̄ - l|  +  level_penalty · Σ_l l²

d_ij are the Euclidean distances between the batch's embeddings, μ̄ and σ̄ running (momentum 0.9) mean and standard
deviation of the batch's distances, and the levels l are learnable (initialised at -3, 0, 3). The original includes
the zero diagonal (d_ii) in μ̄ and σ̄; here only pairs i ≠ j count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from weakdml.errors import UserError


class MDRLoss(torch.nn.Module):
    """``mdr(embeddings (B, D), labels=None) -> scalar``; add it to the metric loss (``weight`` is λ_mdr: 0.6 CUB,
    0.2 Cars, 0.1 SOP and In-shop; ``level_penalty`` is ν). The running statistics move in training mode only; the
    first batch initialises them (until then, each batch is normalised by its own)."""

    def __init__(self, weight: float = 0.6, level_penalty: float = 0.01, levels: Sequence[float] = (-3.0, 0.0, 3.0),
                 momentum: float = 0.9) -> None:
        super().__init__()
        if not levels or not 0.0 <= momentum < 1.0:
            raise UserError(f"MDR needs at least one level and a momentum in [0, 1), got {levels} and {momentum}")
        self.weight, self.level_penalty, self.momentum = weight, level_penalty, momentum
        self.levels = torch.nn.Parameter(torch.tensor(levels, dtype=torch.float32))
        self.register_buffer("running_mean", torch.zeros(()))
        self.register_buffer("running_std", torch.zeros(()))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if embeddings.ndim != 2 or len(embeddings) < 3:
            raise UserError(f"MDR needs embeddings (B, D) with B >= 3, got shape {tuple(embeddings.shape)}")
        d = pairwise_distances(embeddings)  # (B(B-1),) every ordered pair i != j
        if self.training:
            self._track(d.detach().mean(), d.detach().std())
        if self.initialised:
            normalised = (d - self.running_mean) / self.running_std
        else:  # never trained: the batch's own statistics
            normalised = (d - d.detach().mean()) / d.detach().std()
        nearest_level = (normalised.unsqueeze(0) - self.levels.unsqueeze(1)).abs().amin(0)  # (B(B-1),)
        return self.weight * nearest_level.mean() + self.level_penalty * self.levels.pow(2).sum()

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        m = self.momentum if self.initialised else 0.0
        self.running_mean.mul_(m).add_((1 - m) * mean)
        self.running_std.mul_(m).add_((1 - m) * std)
        self.initialised.fill_(True)


def pairwise_distances(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances of every ordered pair i != j of the rows of x (B, D), flattened row by row (B(B-1),)."""
    sq = (x * x).sum(1)
    d2 = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * x @ x.T  # (B, B)
    off = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    return d2[off].clamp_min(eps).sqrt()  # the diagonal is left out before the root: no NaN gradient at d = 0
