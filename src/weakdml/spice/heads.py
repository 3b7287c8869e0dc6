"""SPICE-Self's clustering heads on frozen features, their pseudo-label loss and the choice of a head without labels.

H heads, each an MLP [d, hidden, C], are trained side by side on the same pseudo-labelled images; the head whose
predictions agree best with its own pseudo-labels (lowest loss) is kept. The original feeds the heads' softmax
outputs into a cross-entropy (a second softmax: "DS-CE"), which bounds the loss and damps its gradients; plain
cross-entropy on the logits is the alternative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClusteringHeads(nn.Module):
    """``num_heads`` MLPs Linear(d, hidden) – ReLU – Linear(hidden, C); ``forward`` gives logits (H, B, C) of
    features (B, d) and ``probabilities`` their softmax."""

    def __init__(self, in_features: int, num_clusters: int, num_heads: int = 10, hidden: int = 512) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_clusters))
            for _ in range(num_heads))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(features) for head in self.heads])

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        return self(features).softmax(-1)


def head_losses(logits: torch.Tensor, targets: torch.Tensor, double_softmax: bool = True) -> torch.Tensor:
    """Mean cross-entropy per head (H,) of logits (H, B, C) against pseudo-labels (H, B); ``double_softmax`` is the
    original's DS-CE: the cross-entropy of the softmax probabilities taken as logits."""
    scores = logits.softmax(-1) if double_softmax else logits
    losses = F.cross_entropy(scores.flatten(0, 1), targets.flatten(), reduction="none")  # (H·B,)
    return losses.view(targets.shape).mean(1)


def select_head(logits: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor, double_softmax: bool = True
                ) -> tuple[int, torch.Tensor]:
    """The head with the lowest pseudo-label loss and all heads' losses (H,): ``logits`` (H, N, C) of every image
    (un-augmented, heads in eval mode), ``indices``/``labels`` (H, M) each head's pseudo-labelled images (from
    ``prototype_pseudo_labels`` on the same logits' softmax). No ground truth is involved."""
    chosen = logits.gather(1, indices[..., None].expand(-1, -1, logits.shape[-1]))  # (H, M, C)
    losses = head_losses(chosen, labels, double_softmax)
    return int(losses.argmin()), losses
