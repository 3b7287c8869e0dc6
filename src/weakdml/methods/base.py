"""What every training method offers the engine: batches, a training step, prediction and embedding.

A method is an ``nn.Module`` that owns the embedding network and whatever its loss needs (heads, banks), so one
``state_dict`` holds everything a checkpoint must restore. It sees tensors only, never files or the CLI. The labels
of the unlabelled part never reach it: ``TrainData.unlabeled`` carries -1 labels by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from weakdml.config import Config
from weakdml.data.augment import augment
from weakdml.data.types import ImageSet, TrainData
from weakdml.models.embedding import EmbeddingNet


@dataclass
class Batch:
    """uint8 images (B, C, H, W) on the device, labels and indices into the labelled set; optionally a batch of
    unlabelled images with their indices into the unlabelled set (semi-supervised methods)."""

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    unlabeled_images: torch.Tensor | None = None
    unlabeled_index: torch.Tensor | None = None


class Method(nn.Module):
    """Base class: shuffled batches of the labelled part, weak augmentation, prediction by ``classify``."""

    l2_normalize_by_default = True  # embeddings on the unit sphere unless --(no-)l2-normalize says otherwise
    loss_settings: tuple[str, ...] = ()  # flags besides --lr that set the loss's scale (named if it becomes NaN)

    def __init__(self, model: EmbeddingNet, data: TrainData, cfg: Config) -> None:
        super().__init__()
        self.model = model
        self.data = data
        self.cfg = cfg
        self.generator = torch.Generator()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def seed_epoch(self, epoch: int) -> None:
        """Every random choice of an epoch (order, augmentation) derives from (seed, epoch): resuming is exact."""
        self.generator.manual_seed(self.cfg.train.seed * 100_003 + epoch)

    def stages(self) -> list[int]:
        """Epochs of each training stage; most methods have one (Noisy Student: teacher, then students)."""
        return [self.cfg.train.epochs]

    def begin_stage(self, stage: int) -> None:
        """Called at the start of stage ≥ 1, after the previous stage's best weights were loaded."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch's batches (e.g. to refresh a support bank)."""

    def batches(self, epoch: int) -> Iterator[Batch]:
        """The epoch's training batches; by default the labelled part, shuffled, last batch kept if ≥ 2 images."""
        yield from self.shuffled_batches(self.data.labeled, self.cfg.train.batch_size)

    def shuffled_batches(self, images: ImageSet, batch_size: int) -> Iterator[Batch]:
        order = torch.randperm(len(images), generator=self.generator)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            if len(idx) >= 2:
                yield Batch(images.images[idx].to(self.device), images.labels[idx].to(self.device), idx.to(self.device))

    def view(self, images: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        """An augmented float view of a uint8 batch (kind defaults to the configured augmentation)."""
        return augment(images, kind or self.cfg.data.augment, self.data.flip, self.generator)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Losses of one batch: must hold "loss"; may hold "accuracy" (on the batch) and other terms to log."""
        raise NotImplementedError

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class log-scores (B, C) of embeddings (argmax = prediction)."""
        raise NotImplementedError

    @torch.no_grad()
    def embed_all(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Embeddings (N, D) of uint8 images, in eval mode and without gradient, in batches."""
        batch_size = batch_size or self.cfg.train.eval_batch_size
        was_training = self.training
        self.eval()
        out = [self.model(images[i:i + batch_size].to(self.device).float() / 255)
               for i in range(0, len(images), batch_size)]
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.model.dim, device=self.device)

    @torch.no_grad()
    def predict_all(self, images: torch.Tensor) -> torch.Tensor:
        """Class log-scores (N, C) of uint8 images."""
        emb = self.embed_all(images)
        bs = self.cfg.train.eval_batch_size
        return torch.cat([self.classify(emb[i:i + bs]) for i in range(0, len(emb), bs)])
