"""The MbDML paper's deep-metric-learning baselines (METHODS.md §3), with pytorch-metric-learning's losses.

``contrastive`` (ContrastiveLoss), ``proxy-anchor`` (ProxyAnchorLoss, learnable proxies), ``soft-triple``
(SoftTripleLoss, learnable centres), ``supcon`` (SupConLoss) and ``triplet`` (TripletMarginLoss on the triplets of a
TripletMarginMiner). The miner defaults to semi-hard triplets, FaceNet's choice: the negative is farther than the
positive but within the margin, which avoids the noisy gradients of the hardest triplets in small, partly trained
batches (``--triplet-miner all`` is PML's loss without a miner). Settings default to PML's (``DMLConfig``).

Batches hold P classes × m images (``--m-per-class``) drawn with the method's seeded generator, so resuming is exact.
The loss is computed in float32 outside autocast: PML casts learnable proxies to the embeddings' dtype in place,
which under AMP would turn the parameters into float16.

Prediction uses the same classifier as NNGK: the Gaussian kernel over the labelled images' embeddings (per-centre
weights fixed at zero). The bank is refreshed at the start of every epoch and again before predicting after training
steps, so that queries from the updated network are not scored against the epoch start's centres.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pytorch_metric_learning import losses, miners
from torch import nn

from weakdml.config import Config, DMLConfig
from weakdml.data.samplers import batch_shape, m_per_class_batches
from weakdml.data.types import TrainData
from weakdml.methods.base import Batch, Method
from weakdml.methods.nngk import predict_with_current_centres
from weakdml.methods.nngk_head import NNGKHead
from weakdml.models.embedding import EmbeddingNet


def build_loss(name: str, cfg: DMLConfig, num_classes: int, dim: int) -> tuple[nn.Module, nn.Module | None]:
    """The PML loss called ``name`` and its miner (None: the loss uses every pair/triplet of the batch)."""
    if name == "contrastive":
        loss = losses.ContrastiveLoss(pos_margin=cfg.contrastive_pos_margin, neg_margin=cfg.contrastive_neg_margin)
        return loss, None
    if name == "proxy-anchor":
        return losses.ProxyAnchorLoss(num_classes, dim, margin=cfg.proxy_margin, alpha=cfg.proxy_alpha), None
    if name == "soft-triple":
        return losses.SoftTripleLoss(num_classes, dim, centers_per_class=cfg.centers_per_class, la=cfg.soft_triple_la,
                                     gamma=cfg.soft_triple_gamma, margin=cfg.soft_triple_margin), None
    if name == "supcon":
        return losses.SupConLoss(temperature=cfg.supcon_temperature), None
    if name == "triplet":
        return (losses.TripletMarginLoss(margin=cfg.triplet_margin),
                miners.TripletMarginMiner(margin=cfg.triplet_margin, type_of_triplets=cfg.triplet_miner))
    raise ValueError(f"unknown DML loss {name!r}")


class DMLMethod(Method):
    """A PML loss on m-per-class batches; the subclass names the loss. Predicts with the NNGK classifier."""

    loss_name = ""

    def __init__(self, model: EmbeddingNet, data: TrainData, cfg: Config) -> None:
        super().__init__(model, data, cfg)
        num_classes = int(data.labeled.labels.unique().numel())
        batch_shape(num_classes, cfg.train.batch_size, cfg.dml.m_per_class)  # fail now, not at the first epoch
        self.loss, self.miner = build_loss(self.loss_name, cfg.dml, data.num_classes, model.dim)
        n = cfg.nngk
        self.head = NNGKHead(len(data.labeled), model.dim, data.num_classes, n.neighbours, n.sigma)
        self.head.log_weights.requires_grad_(False)  # a fixed kernel classifier: not trained by the DML loss

    def on_epoch_start(self, epoch: int) -> None:
        labeled = self.data.labeled
        self.head.refresh(self.embed_all(labeled.images), labeled.labels.to(self.device), epoch)

    def batches(self, epoch: int) -> Iterator[Batch]:
        labeled = self.data.labeled
        for idx in m_per_class_batches(labeled.labels, self.cfg.train.batch_size, self.cfg.dml.m_per_class,
                                       self.generator):
            yield Batch(labeled.images[idx].to(self.device), labeled.labels[idx].to(self.device), idx.to(self.device))

    def metric_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The PML loss (after mining, if any) of embeddings (B, D), in float32."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            z = embeddings.float()
            triplets = self.miner(z, labels) if self.miner is not None else None
            return self.loss(z, labels, triplets)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        z = self.model(self.view(batch.images))
        with torch.no_grad():
            scores = self.head.query_log_scores(z, exclude=batch.index[:, None])  # not the image's own centre
            accuracy = (scores.argmax(1) == batch.labels).float().mean()
        return {"loss": self.metric_loss(z, batch.labels), "accuracy": accuracy}

    def predict_all(self, images: torch.Tensor) -> torch.Tensor:
        return predict_with_current_centres(self, self.head, images)


class Contrastive(DMLMethod):
    loss_name = "contrastive"


class ProxyAnchor(DMLMethod):
    loss_name = "proxy-anchor"


class SoftTriple(DMLMethod):
    loss_name = "soft-triple"


class SupCon(DMLMethod):
    loss_name = "supcon"


class Triplet(DMLMethod):
    loss_name = "triplet"
