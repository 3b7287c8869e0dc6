"""The MbDML paper's deep-metric-learning baselines, with pytorch-metric-learning's losses (docs/methods.md, DML).

``contrastive`` (ContrastiveLoss), ``proxy-anchor`` (ProxyAnchorLoss, learnable proxies), ``soft-triple``
(SoftTripleLoss, learnable centres), ``supcon`` (SupConLoss) and ``triplet`` (TripletMarginLoss on the triplets of a
TripletMarginMiner). The miner defaults to semi-hard triplets, FaceNet's choice: the negative is farther than the
positive but within the margin, which avoids the noisy gradients of the hardest triplets in small, partly trained
batches (``--triplet-miner all`` is PML's loss without a miner). Settings default to PML's (``DMLConfig``).

Batches hold P classes × m images (``--m-per-class``) drawn with the method's seeded generator, so resuming is exact.
The loss is computed in float32 outside autocast: PML casts learnable proxies to the embeddings' dtype in place,
which under AMP would turn the parameters into float16.

Prediction uses the same classifier as NNGK: the Gaussian kernel over the labelled images' embeddings (per-centre
weights fixed at zero), embedded anew by the current network whenever it predicts. Training needs no bank, so none is
kept up to date (no training accuracy is logged: it would cost an embedding pass per epoch).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pytorch_metric_learning import losses, miners
from torch import nn

from weakdml.config import Config, DMLConfig
from weakdml.data.samplers import batch_shape, m_per_class_batches
from weakdml.data.types import TrainData
from weakdml.methods.base import Batch, Method, Scorer
from weakdml.methods.nngk import current_centres_scorer
from weakdml.methods.nngk_head import NNGKHead
from weakdml.models.embedding import EmbeddingNet


class DMLMethod(Method):
    """A PML loss on m-per-class batches; the subclass names the loss. Predicts with the NNGK classifier."""

    sections = ("dml",)

    def __init__(self, model: EmbeddingNet, data: TrainData, cfg: Config) -> None:
        super().__init__(model, data, cfg)
        num_classes = int(data.labeled.labels.unique().numel())
        batch_shape(num_classes, cfg.train.batch_size, cfg.dml.m_per_class)  # fail now, not at the first epoch
        self.loss, self.miner = self.build_loss(cfg.dml, data.num_classes, model.dim)
        n = cfg.nngk
        self.head = NNGKHead(len(data.labeled), model.dim, data.num_classes, n.neighbours, n.sigma)
        self.head.log_weights.requires_grad_(False)  # a fixed kernel classifier: not trained by the DML loss
        self.head.centre_labels.copy_(data.labeled.labels)  # its centres are embedded anew at each prediction

    def build_loss(self, cfg: DMLConfig, num_classes: int, dim: int) -> tuple[nn.Module, nn.Module | None]:
        """The PML loss and its miner (None: the loss uses every pair or triplet of the batch)."""
        raise NotImplementedError

    def batches(self, epoch: int) -> Iterator[Batch]:
        for idx in m_per_class_batches(self.data.labeled.labels, self.cfg.train.batch_size, self.cfg.dml.m_per_class,
                                       self.generator):
            yield Batch(idx)

    def metric_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The PML loss (after mining, if any) of embeddings (B, D), in float32."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            z = embeddings.float()
            triplets = self.miner(z, labels) if self.miner is not None else None
            return self.loss(z, labels, triplets)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"loss": self.metric_loss(self.model(self.view(batch.images)), batch.labels)}

    def scorer(self) -> Scorer:
        return current_centres_scorer(self, self.head)


class Contrastive(DMLMethod):
    def build_loss(self, cfg: DMLConfig, num_classes: int, dim: int) -> tuple[nn.Module, None]:
        margins = {"pos_margin": cfg.contrastive_pos_margin, "neg_margin": cfg.contrastive_neg_margin}
        return losses.ContrastiveLoss(**margins), None


class ProxyAnchor(DMLMethod):
    def build_loss(self, cfg: DMLConfig, num_classes: int, dim: int) -> tuple[nn.Module, None]:
        return losses.ProxyAnchorLoss(num_classes, dim, margin=cfg.proxy_margin, alpha=cfg.proxy_alpha), None


class SoftTriple(DMLMethod):
    def build_loss(self, cfg: DMLConfig, num_classes: int, dim: int) -> tuple[nn.Module, None]:
        return losses.SoftTripleLoss(num_classes, dim, centers_per_class=cfg.centers_per_class, la=cfg.soft_triple_la,
                                     gamma=cfg.soft_triple_gamma, margin=cfg.soft_triple_margin), None


class SupCon(DMLMethod):
    def build_loss(self, cfg: DMLConfig, num_classes: int, dim: int) -> tuple[nn.Module, None]:
        return losses.SupConLoss(temperature=cfg.supcon_temperature), None


class Triplet(DMLMethod):
    def build_loss(self, cfg: DMLConfig, num_classes: int, dim: int) -> tuple[nn.Module, nn.Module]:
        return (losses.TripletMarginLoss(margin=cfg.triplet_margin),
                miners.TripletMarginMiner(margin=cfg.triplet_margin, type_of_triplets=cfg.triplet_miner))
