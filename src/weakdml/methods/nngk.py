"""NNGK training (docs/methods.md, NNGK): the negative log-likelihood of the Gaussian-kernel classifier over the
bank."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from weakdml.config import Config
from weakdml.data.sources import all_images, view
from weakdml.evaluation.knn import search_backend
from weakdml.methods.base import Batch, Method, Scorer, TrainData
from weakdml.methods.nngk_head import NNGKHead
from weakdml.models.embedding import EmbeddingNet


class NNGK(Method):
    """Support bank of all labelled training images, refreshed every ``update_interval`` epochs (0, 5, 10, …; a
    stage that starts from another's weights refreshes at its first epoch)."""

    sections = ("nngk",)

    loss_settings = ("--sigma",)  # the kernel's width: exp(-d / sigma) of a small sigma under- or overflows

    def __init__(self, model: EmbeddingNet, data: TrainData, cfg: Config) -> None:
        super().__init__(model, data, cfg)
        n = cfg.nngk
        self.head = NNGKHead(len(data.labeled), model.dim, data.num_classes, n.neighbours, n.sigma, n.learnable_sigma,
                             search_backend(cfg.train.knn))

    def start_from(self, state: dict[str, Any]) -> None:
        super().start_from(state)
        self.head.refreshed_at.fill_(-1)  # this stage's bank is built at its first epoch

    def on_epoch_start(self, epoch: int) -> None:
        """Re-embed the bank when it is ``update_interval`` epochs old, or was reset (-1: a new stage)."""
        refreshed_at = int(self.head.refreshed_at)
        if refreshed_at < 0 or epoch - refreshed_at >= self.cfg.nngk.update_interval:
            self.head.refresh(embed_labeled(self), self.data.labeled.labels.to(self.device), epoch)

    def nngk_loss(self, embeddings: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """NLL of the clean samples over their own centres' neighbours, and the batch accuracy."""
        scores = self.head.train_log_scores(embeddings, batch.index)
        return F.cross_entropy(scores, batch.labels), (scores.argmax(1) == batch.labels).float().mean()

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        loss, accuracy = self.nngk_loss(self.model(self.view(batch.images, rows=batch.rows)), batch)
        return {"loss": loss, "accuracy": accuracy}

    def scorer(self) -> Scorer:
        return current_centres_scorer(self, self.head)


RECALIBRATION_IMAGES = 2048  # evenly spaced labelled images whose batch statistics become BatchNorm's


def embed_labeled(method: Method) -> torch.Tensor:
    """The labelled images' embeddings (N, D) in eval mode, after recomputing the BatchNorm statistics on them, for
    the training bank: eval mode must embed as training batches do, or the centres are far from the training
    queries (docs/results.md, "Paper parity")."""
    labeled = method.data.labeled
    spaced = torch.arange(0, len(labeled), max(1, -(-len(labeled) // RECALIBRATION_IMAGES)))
    method.model.recalibrate_batchnorm(all_images(view(labeled, spaced)), method.cfg.train.eval_batch_size)
    return method.embed_all(labeled)


@torch.no_grad()
def current_centres_scorer(method: Method, head: NNGKHead) -> Scorer:
    """The kernel classifier over the labelled images embedded by the current model, leaving the training bank as
    it is. The bank is refreshed only at epoch starts (or every ``update_interval`` epochs), and comparing new
    embeddings with centres of an older network costs much accuracy
    (docs/results.md, design decisions)."""
    centres = method.embed_all(method.data.labeled)
    return lambda embeddings: head.query_log_scores(embeddings, centres=centres)
