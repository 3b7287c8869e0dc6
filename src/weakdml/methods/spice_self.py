"""SPICE-Self (Niu et al. 2022) as a method: clustering heads trained on a frozen backbone with prototype
pseudo-labels, no label read (spice/heads.py and spice/pseudo_labels.py hold the pieces).

Each step is one big batch of the images to cluster (the unlabelled part; ``--spice-self-batch`` images, by
default a tenth of them): a weak view through the frozen backbone gives every head's probabilities and the
L2-normalised features, from which each head gets its prototype pseudo-labels; a strong view of the same images
then trains every head with cross-entropy against its own pseudo-labels (DS-CE, the original's softmax fed to
cross-entropy, or plain cross-entropy). The head that predicts is the one with the lowest pseudo-label loss on the
un-augmented images (``select_head``): no ground truth chooses it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from weakdml.config import Config
from weakdml.data.types import TrainData
from weakdml.engine import dist
from weakdml.engine.optim import ParamGroup
from weakdml.errors import UserError
from weakdml.methods.base import Batch, Method, Scorer
from weakdml.models.embedding import EmbeddingNet
from weakdml.spice.heads import ClusteringHeads, head_losses, select_head
from weakdml.spice.pseudo_labels import prototype_pseudo_labels

log = logging.getLogger("weakdml")
FEW_STEPS = 10  # big batches an epoch below which the heads learn too little (measured: docs/results.md)


def num_clusters(cfg: Config, data: TrainData) -> int:
    """``--num-clusters``, else the data set's number of classes."""
    clusters = cfg.spice.num_clusters or data.num_classes
    if clusters < 2:
        raise UserError("give the number of clusters: --num-clusters C (at least 2)")
    if clusters > len(data.unlabeled):
        raise UserError(f"{len(data.unlabeled)} images cannot form {clusters} clusters: give fewer --num-clusters or "
                        f"more images")
    return clusters


def default_big_batch(cfg: Config, data: TrainData) -> int:
    """A tenth of the images (ten pseudo-labellings an epoch), at least 50 images a cluster (the smallest measured)
    and at most the original's 5,000."""
    return min(max(len(data.unlabeled) // FEW_STEPS, 50 * num_clusters(cfg, data)), 5000)


def big_batch(cfg: Config, data: TrainData) -> int:
    """``--spice-self-batch``, else the default; never more than the images."""
    return min(cfg.spice.spice_self_batch or default_big_batch(cfg, data), len(data.unlabeled))


def start_network_from(model: EmbeddingNet, state: dict[str, Any]) -> None:
    """Load the embedding network (``model.*``) of an earlier stage's method state, e.g. the MoCo backbone."""
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})


def equal_chunks(order: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """``order`` in ⌈N / size⌉ chunks of (nearly) equal length, none longer than ``size``: every image is used and
    no chunk is a small remainder."""
    yield from order.tensor_split(max(1, -(-len(order) // size)))


class SpiceSelf(Method):
    """H heads on the frozen network's pooled, L2-normalised features; only the heads train."""

    needs_labels = False
    task = "clustering"
    monitor = "last"
    sections = ("spice",)

    def __init__(self, model: EmbeddingNet, data: TrainData, cfg: Config) -> None:
        super().__init__(model, data, cfg)
        model.requires_grad_(False)
        s = cfg.spice
        self.heads = ClusteringHeads(model.dim, num_clusters(cfg, data), s.spice_heads, s.spice_hidden)
        self.big_batch = big_batch(cfg, data)

    @classmethod
    def check_data(cls, cfg: Config, data: TrainData) -> None:
        """Warn, before the pipeline's first stage runs, when a given ``--spice-self-batch`` leaves the heads fewer
        big batches an epoch than the default would."""
        images, given, default = len(data.unlabeled), cfg.spice.spice_self_batch, default_big_batch(cfg, data)
        steps = -(-images // big_batch(cfg, data))
        if given and steps < FEW_STEPS and steps < -(-images // default):
            log.warning(f"SPICE-Self: {images:,} images in big batches of {given:,} give the heads {steps} "
                        f"step(s) an epoch, one pseudo-labelling each; a 10,000-image folder clustered at 0.55 ACC "
                        f"with 2 an epoch and 0.70 with {FEW_STEPS}: consider --spice-self-batch {default} (the "
                        f"default here)")

    def train(self, mode: bool = True) -> SpiceSelf:
        super().train(mode)
        self.model.eval()  # frozen: the backbone's BatchNorm keeps its running statistics
        return self

    def start_from(self, state: dict[str, Any]) -> None:
        start_network_from(self.model, state)

    def parameter_groups(self) -> list[ParamGroup]:
        return [ParamGroup("heads", list(self.heads.parameters()))]

    def batches(self, epoch: int) -> Iterator[Batch]:
        order = torch.randperm(len(self.data.unlabeled), generator=self.generator)
        for index in equal_chunks(order, self.big_batch):
            yield Batch(torch.zeros(0, dtype=torch.long), index)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The pseudo-labels and the loss are of the whole global batch: with several processes each embeds its
        rows and the features and the heads' logits are gathered."""
        images, rows = batch.unlabeled_images, batch.unlabeled_rows
        with torch.no_grad():
            weak = dist.gather(self.model(self.view(images, "weak", rows)))  # (N, D)
            pseudo = prototype_pseudo_labels(self.heads.probabilities(weak), weak)  # (H, C·M) each
            strong = self.model(self.view(images, "strong", rows))  # (N_rank, D)
        logits = dist.gather(self.heads(strong).transpose(0, 1)).transpose(0, 1)  # (H, N, C)
        chosen = logits.gather(1, pseudo.indices[..., None].expand(-1, -1, logits.shape[-1]))  # (H, C·M, C)
        losses = head_losses(chosen, pseudo.labels, self.cfg.spice.double_softmax)  # (H,)
        return {"loss": losses.sum(), "lowest_head_loss": losses.min().detach()}

    @torch.no_grad()
    def all_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Every head's logits (H, N, C) of features (N, D), in evaluation batches."""
        bs = self.cfg.train.eval_batch_size
        return torch.cat([self.heads(features[i:i + bs]) for i in range(0, len(features), bs)], 1)

    @torch.no_grad()
    def choose_head(self, features: torch.Tensor) -> tuple[int, torch.Tensor]:
        """The head of lowest pseudo-label loss on the un-augmented images' features (N, D), and every head's loss."""
        logits = self.all_logits(features)
        pseudo = prototype_pseudo_labels(logits.softmax(-1), features)
        return select_head(logits, pseudo.indices, pseudo.labels, self.cfg.spice.double_softmax)

    def scorer(self) -> Scorer:
        """The chosen head (chosen anew from the current weights) as a classifier of embeddings."""
        head, _ = self.choose_head(self.embed_all(self.data.unlabeled))
        return lambda embeddings: F.log_softmax(self.heads.heads[head](embeddings), 1)
