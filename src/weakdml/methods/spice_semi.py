"""SPICE-Semi (Niu et al. 2022) as a method: FixMatch (semisup/fixmatch.py) with the reliable samples as the
labelled set and every image to cluster as unlabelled; the labels are clusters chosen by the earlier stages, never
ground truth.

A step has ``--spice-semi-batch`` reliable images (cycled, reshuffled at every pass) and ``--fixmatch-ratio`` times
as many of all images; an epoch is one pass over all images. The weak views of both and the strong view of the
unlabelled ones go through the network in one batch. The evaluated model is the moving average of the weights
(``--spice-ema``), updated at the start of each step (so it trails the weights by one step).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from weakdml.config import Config
from weakdml.data.draws import Rows
from weakdml.data.types import TrainData
from weakdml.engine import dist
from weakdml.engine.optim import ParamGroup
from weakdml.methods.base import Batch, Method
from weakdml.methods.spice_self import num_clusters, start_network_from
from weakdml.models.embedding import EmbeddingNet
from weakdml.semisup.fixmatch import ema_model, fixmatch_loss


def cycled(pool: torch.Tensor, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Chunks of exactly ``size`` from ``pool``, reshuffled at every pass (a pool smaller than ``size`` repeats)."""
    buffer = pool[:0]
    while True:
        while len(buffer) < size:
            buffer = torch.cat([buffer, pool[torch.randperm(len(pool), generator=generator)]])
        yield buffer[:size]
        buffer = buffer[size:]


class SpiceSemi(Method):
    """A linear classifier on the network's pooled features; ``reliable`` holds the reliable samples' ``indices``
    into the unlabelled part and their cluster ``labels``."""

    needs_labels = False
    task = "clustering"
    monitor = "last"
    sections = ("spice",)
    l2_normalize_by_default = False  # a softmax classifier, as cross-entropy's

    def __init__(self, model: EmbeddingNet, data: TrainData, cfg: Config, reliable: dict[str, torch.Tensor]) -> None:
        super().__init__(model, data, cfg)
        self.classifier = nn.Linear(model.dim, num_clusters(cfg, data))
        self.reliable = reliable["indices"].long()
        labels = torch.full((len(data.unlabeled),), -1, dtype=torch.long)
        labels[self.reliable] = reliable["labels"].long()
        self.register_buffer("cluster_of", labels, persistent=False)  # (N,): the reliable ones' clusters, else -1
        self.ema = ema_model(self.network(), cfg.spice.spice_ema).requires_grad_(False)

    def network(self) -> nn.Sequential:
        return nn.Sequential(self.model, self.classifier)

    def start_from(self, state: dict[str, Any]) -> None:
        start_network_from(self.model, state)

    def parameter_groups(self) -> list[ParamGroup]:
        return [ParamGroup("all", list(self.network().parameters()))]

    def batches(self, epoch: int) -> Iterator[Batch]:
        """Per step the reliable images first (``spice_semi_batch``), then the unlabelled ones."""
        s = self.cfg.spice
        n, size = len(self.data.unlabeled), s.spice_semi_batch * s.fixmatch_ratio
        order = torch.randperm(n, generator=self.generator)
        labeled = cycled(self.reliable, s.spice_semi_batch, self.generator)
        for start in range(0, max(n - size, 0) + 1, size):
            yield Batch(torch.zeros(0, dtype=torch.long), torch.cat([next(labeled), order[start:start + size]]))

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """FixMatch on the global batch (its first ``spice_semi_batch`` images the reliable ones): each process
        takes the weak view of its rows and the strong view of those among them that are unlabelled, and the
        logits are gathered."""
        self.ema.update_parameters(self.network())
        b = self.cfg.spice.spice_semi_batch
        images, rows = batch.unlabeled_images, batch.unlabeled_rows
        positions = rows.positions()
        unlabeled = positions >= b
        strong_rows = Rows(rows.total - b, positions[unlabeled] - b)
        views = torch.cat([self.view(images, "weak", rows),
                           self.view(images[unlabeled.to(images.device)], "strong", strong_rows)])
        logits = self.classifier(self.model(views))
        weak, strong = dist.gather(logits[:len(images)]), dist.gather(logits[len(images):])  # (b + μb, C), (μb, C)
        labels = self.cluster_of[batch.global_unlabeled_index[:b].to(self.cluster_of.device)]
        return fixmatch_loss(weak[:b], labels, weak[b:], strong, self.cfg.spice.fixmatch_threshold)

    def evaluated_network(self) -> nn.Module:
        return self.ema.module[0]

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.ema.module[1](embeddings), 1)
