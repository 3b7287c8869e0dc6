"""The embedding network: normalisation of the input, backbone, optional dropout and linear projection, optional L2.

Inputs are float images in [0, 1]; per-channel mean and std of the training data are buffers of the model, so a saved
model embeds new images without knowing the data set. The backbone runs in channels-last memory format: on CPU its
max-pooling is otherwise several times slower on mixed (Mixup) images than on clean ones; in channels-last both cost
the same (docs/results.md, design decisions), and it is the format tensor cores prefer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weakdml.config import ModelConfig
from weakdml.data.sources import ImageSet, ImageSource
from weakdml.models.backbones import build_backbone


class EmbeddingNet(nn.Module):
    def __init__(self, cfg: ModelConfig, in_channels: int, image_size: int,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.grey_as_rgb = cfg.grey_as_rgb and in_channels == 1
        self.backbone, features = build_backbone(cfg.backbone, 3 if self.grey_as_rgb else in_channels, image_size,
                                                 cfg.stochastic_depth, cfg.small_stem, cfg.width, cfg.pooling)
        self.backbone.to(memory_format=torch.channels_last)
        self.dropout = nn.Dropout(cfg.dropout)  # p may be raised later (Noisy Student's noise)
        self.projection = nn.Linear(features, cfg.embedding_dim) if cfg.embedding_dim else nn.Identity()
        self.dim = cfg.embedding_dim or features
        self.l2_normalize = cfg.l2_normalize is not False  # None (unresolved): the general default, on
        self.batchnorm = cfg.batchnorm
        if cfg.input_norm == "half":  # the original's Normalize(0.5, 0.5)
            mean = std = torch.full((in_channels,), 0.5)
        self.register_buffer("mean", (mean if mean is not None else torch.full((in_channels,), 0.5)).view(1, -1, 1, 1))
        self.register_buffer("std", (std if std is not None else torch.full((in_channels,), 0.25)).view(1, -1, 1, 1))
        if self.batchnorm == "frozen":
            for module in self.batchnorms():
                module.requires_grad_(False)

    def batchnorms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> EmbeddingNet:
        super().train(mode)
        if self.batchnorm != "train":
            for module in self.batchnorms():
                module.eval()
        return self

    @torch.no_grad()
    def recalibrate_batchnorm(self, images: torch.Tensor, batch_size: int, max_images: int = 2048) -> None:
        """Recompute the BatchNorm statistics over up to ``max_images`` uint8 images (N, C, H, W), evenly spaced, in
        training mode (precise BN; no-op unless --batchnorm train). Training batches are normalised by their own
        statistics, eval mode by the running ones, which lag behind the weights, so a support bank embedded in eval
        mode is far from training-mode queries unless the statistics are recomputed (docs/results.md, "Paper
        parity"). The statistics are averages over batches
        (``update_bn``), so each batch takes every k-th image: batches of consecutive images of a class-sorted set
        would each see few classes, and the average of their variances would miss the variance between classes."""
        if self.batchnorm != "train" or len(images) == 0:
            return
        subset = images[::-(-len(images) // max_images)]
        parts = -(-len(subset) // batch_size)
        device = self.mean.device
        batches = (subset[i::parts].to(device).float() / 255 for i in range(parts))  # (≤ batch_size, C, H, W) each
        torch.optim.swa_utils.update_bn(batches, self)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, F), before projection."""
        x = (images - self.mean) / self.std
        x = x.expand(-1, 3, -1, -1) if self.grey_as_rgb else x  # (B, 1, H, W) -> (B, 3, H, W)
        return self.backbone(x.contiguous(memory_format=torch.channels_last))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        emb = self.projection(self.dropout(self.features(images)))
        return F.normalize(emb, dim=1) if self.l2_normalize else emb


def channel_stats(images: ImageSource | torch.Tensor, max_images: int = 10000, batch_size: int = 64
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (of [0, 1] values) of the first ``max_images`` images of a source (or of uint8
    (N, C, H, W)), read ``batch_size`` at a time so that the sample is never in memory at once (10,000 images of
    256 px would take 7.9 GB as floats)."""
    source = ImageSet(images, torch.zeros(len(images))) if isinstance(images, torch.Tensor) else images
    n, (channels, height, width) = min(len(source), max_images), source.shape
    sums, squares = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
    for start in range(0, n, batch_size):
        batch = source.load(torch.arange(start, min(n, start + batch_size))).float() / 255  # (B, C, H, W)
        sums += batch.sum(dim=(0, 2, 3)).double()
        squares += batch.square().sum(dim=(0, 2, 3)).double()
    count = n * height * width
    mean = sums / count
    variance = (squares - count * mean.square()) / (count - 1)  # unbiased, as torch.std
    return mean.float(), variance.clamp(min=0).sqrt().float().clamp(min=1e-3)
