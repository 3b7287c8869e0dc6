"""A linear classifier on the embedding, trained by cross-entropy (``cross-entropy``) or with Mixup (``mixup``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weakdml.config import Config
from weakdml.data.types import TrainData
from weakdml.methods.base import Batch, Method
from weakdml.methods.mixing import mix, mixed_loss, sample_lambda, sample_partners
from weakdml.models.embedding import EmbeddingNet


class CrossEntropy(Method):
    """Softmax classifier head on the embedding; predicts with it. As usual for a softmax baseline the embedding is
    not L2-normalised by default (a linear head on the unit sphere has bounded logits); normalising it made no
    measurable difference (docs/results.md, design decisions)."""

    l2_normalize_by_default = False

    def __init__(self, model: EmbeddingNet, data: TrainData, cfg: Config) -> None:
        super().__init__(model, data, cfg)
        self.classifier = nn.Linear(model.dim, data.num_classes)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.model(self.view(batch.images, rows=batch.rows)))
        return {"loss": F.cross_entropy(logits, batch.labels),
                "accuracy": (logits.argmax(1) == batch.labels).float().mean()}

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.classifier(embeddings)


class Mixup(CrossEntropy):
    """Cross-entropy on mixed images against both labels, weighted λ and 1 − λ (the paper's Mixup baseline)."""

    sections = ("mixup",)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        lam = sample_lambda(self.cfg.mixup.alpha, self.generator)
        rows = batch.rows
        partners = sample_partners(rows.total, rows.part, self.generator).to(self.device)
        logits = self.classifier(self.model(mix(self.view(batch.images, rows=rows), lam, partners)))
        partner_labels = self.global_labels(batch)[partners]
        loss = mixed_loss(lambda y: F.cross_entropy(logits, y), batch.labels, lam, partner_labels)
        hits = (logits.argmax(1)[:, None] == torch.stack([batch.labels, partner_labels], 1)).float()
        accuracy = (lam * hits[:, 0] + (1 - lam) * hits[:, 1]).mean()
        return {"loss": loss, "accuracy": accuracy, "lambda": torch.tensor(lam)}
