"""FixMatch (Sohn et al. 2020): labelled cross-entropy plus consistency between a weak and a strong view of the
unlabelled images, where the weak view's prediction is confident; and the EMA of the model that is evaluated."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def fixmatch_loss(labeled_logits: torch.Tensor, labels: torch.Tensor, weak_logits: torch.Tensor,
                  strong_logits: torch.Tensor, threshold: float = 0.95, unlabeled_weight: float = 1.0
                  ) -> dict[str, torch.Tensor]:
    """Losses of one FixMatch step: labelled logits (B, C) and labels (B,); weak and strong views' logits (μB, C) of
    the same unlabelled images. The weak view's argmax is the pseudo-label where its probability is ≥ ``threshold``;
    the strong view's cross-entropy against it is averaged over all μB images (masked ones count as 0), as
    FixMatch. Returns ``loss`` (labelled + weight · unlabelled), ``labeled``, ``unlabeled`` and ``mask_rate``."""
    labeled = F.cross_entropy(labeled_logits, labels)
    confidence, pseudo = weak_logits.detach().softmax(1).max(1)
    mask = (confidence >= threshold).float()
    unlabeled = (F.cross_entropy(strong_logits, pseudo, reduction="none") * mask).mean()
    return {"loss": labeled + unlabeled_weight * unlabeled, "labeled": labeled, "unlabeled": unlabeled,
            "mask_rate": mask.mean()}


def ema_model(model: nn.Module, decay: float = 0.999) -> AveragedModel:
    """An exponential moving average of ``model``'s parameters and floating buffers (BatchNorm statistics), torch's
    ``AveragedModel``: call ``update_parameters(model)`` after each optimiser step (the first call copies the
    model). The t-th update after that copy uses the decay min(``decay``, (1 + t) / (10 + t)), TensorFlow's warm-up
    of ``ExponentialMovingAverage``: a short run is not mostly its random start (300 steps at 0.999 keep 74 % of
    it), a long one is averaged at ``decay``. Integer buffers (BatchNorm's batch counter) are averaged and
    truncated, harmless with BatchNorm's default momentum."""

    @torch.no_grad()
    def warmed_up_ema(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        t = float(updates)
        get_ema_multi_avg_fn(min(decay, (1 + t) / (10 + t)))(averaged, current, updates)

    return AveragedModel(model, multi_avg_fn=warmed_up_ema, use_buffers=True)
