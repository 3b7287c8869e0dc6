"""The MbDML paper's deep-metric-learning baselines, with pytorch-metric-learning's losses (docs/methods.md, DML).

``contrastive`` (ContrastiveLoss), ``proxy-anchor`` (ProxyAnchorLoss, learnable proxies), ``soft-triple``
(SoftTripleLoss, learnable centres), ``supcon`` (SupConLoss) and ``triplet`` (TripletMarginLoss on the triplets of a
TripletMarginMiner). The miner defaults to semi-hard triplets, FaceNet's choice: the negative is farther than the
positive but within the margin, which avoids the noisy gradients of the hardest triplets in small, partly trained
batches (``--triplet-miner all`` is PML's loss without a miner). Settings default to PML's (``DMLConfig``).

Batches hold P classes × m images (``--m-per-class``) drawn with the method's seeded generator, so resuming is exact.
The loss is computed in float32 outside autocast: PML casts learnable proxies to the embeddings' dtype in place,
which under AMP would turn the parameters into float16.

``ms``, ``contrastive`` and ``triplet`` are pair losses: ``--iaa`` wraps them in IAA (``losses/iaa.py``): from
``--iaa-start-epoch`` on, the class statistics are re-estimated every ``--iaa-update-every`` epochs from the labelled
images embedded without augmentation, and λ follows the paper's decay. ``--mdr`` adds the MDR regulariser to any of
these losses.

Prediction uses the same classifier as NNGK: the Gaussian kernel over the labelled images' embeddings (per-centre
weights fixed at zero), embedded anew by the current network whenever it predicts. Training needs no bank, so none is
kept up to date (no training accuracy is logged: it would cost an embedding pass per epoch).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.distances import CosineSimilarity
from torch import nn

from weakdml.config import Config, DMLConfig
from weakdml.data.samplers import batch_shape, m_per_class_batches
from weakdml.data.types import TrainData
from weakdml.engine import dist
from weakdml.errors import UserError
from weakdml.losses import IAALoss, MDRLoss, iaa_lambda, multi_similarity
from weakdml.methods.base import Batch, Method, Scorer
from weakdml.methods.nngk import current_centres_scorer
from weakdml.methods.nngk_head import NNGKHead
from weakdml.models.embedding import EmbeddingNet

log = logging.getLogger("weakdml")


class DMLMethod(Method):
    """A PML loss on m-per-class batches; the subclass names the loss. Predicts with the NNGK classifier."""

    sections = ("dml", "mdr")

    @classmethod
    def l2_normalizes(cls, cfg: Config) -> bool:
        """Not with MDR: its distances are normalised by their running mean and spread, so on the unit sphere it can
        pull every embedding together (docs/results.md, IAA study); the MDR paper leaves embeddings unnormalised."""
        return not cfg.mdr.mdr

    @classmethod
    def check_data(cls, cfg: Config, data: TrainData) -> None:
        """At least two classes of labelled images and a batch that holds two of them; classes with fewer images
        than --m-per-class are reported (their images repeat within a batch)."""
        counts = torch.bincount(data.labeled.labels[data.labeled.labels >= 0])
        counts = counts[counts > 0]
        if len(counts) < 2:
            raise UserError(f"metric learning needs labelled images of at least 2 classes, and the training images "
                            f"hold {len(counts)}; train on more classes (--train-classes, fewer --val-classes)")
        batch_shape(len(counts), cfg.train.batch_size, cfg.dml.m_per_class)
        small = int((counts < cfg.dml.m_per_class).sum())
        if small:
            log.warning(f"{small} of the {len(counts)} training classes have fewer than --m-per-class "
                        f"{cfg.dml.m_per_class} labelled images: their images repeat within a batch (drawn with "
                        f"replacement)")

    def __init__(self, model: EmbeddingNet, data: TrainData, cfg: Config) -> None:
        super().__init__(model, data, cfg)
        if cfg.mdr.mdr and model.l2_normalize:
            log.warning("--mdr with --l2-normalize: MDR can collapse L2-normalised embeddings onto one point; "
                        "without --l2-normalize (its default) it regularises their distances as the MDR paper")
        self.loss, self.miner = self.build_loss(cfg.dml, data.num_classes, model.dim)
        self.iaa = build_iaa(self.loss, self.miner, data.num_classes, model.dim, cfg) if cfg.iaa.iaa else None
        self.mdr = MDRLoss(cfg.mdr.mdr_weight, cfg.mdr.mdr_level_penalty) if cfg.mdr.mdr else None
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

    def on_epoch_start(self, epoch: int) -> None:
        """IAA: λ of this epoch, and the class statistics re-estimated when they are due."""
        if self.iaa is None:
            return
        i = self.cfg.iaa
        self.iaa.lam = iaa_lambda(i.iaa_lambda, epoch + 1, self.cfg.train.epochs)
        self.iaa.reseed(self.epoch_seed(epoch))  # the copies' noise: the same after a resume
        start = self.cfg.train.epochs * 3 // 10 if i.iaa_start_epoch is None else i.iaa_start_epoch
        if epoch >= start and (epoch - start) % i.iaa_update_every == 0:
            self.iaa.update_statistics(self.embed_all(self.data.labeled), self.data.labeled.labels.to(self.device))

    def metric_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The PML loss (after mining, if any; with IAA's copies and MDR when on) of embeddings (B, D), in float32:
        {"loss": total, "mdr": the MDR term}."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            z = embeddings.float()
            if self.iaa is not None:
                loss = self.iaa(z, labels)
            else:
                loss = self.loss(z, labels, self.miner(z, labels) if self.miner is not None else None)
            if self.mdr is None:
                return {"loss": loss}
            mdr = self.mdr(z)
            return {"loss": loss + mdr, "mdr": mdr}

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The loss of the whole global batch: every process's embeddings are gathered (their gradients come back
        to each process's own rows)."""
        embeddings = self.model(self.view(batch.images, rows=batch.rows))
        return self.metric_loss(dist.gather(embeddings), self.global_labels(batch))

    def scorer(self) -> Scorer:
        return current_centres_scorer(self, self.head)


def build_iaa(loss: nn.Module, miner: nn.Module | None, num_classes: int, dim: int, cfg: Config) -> IAALoss:
    """``loss`` wrapped in IAA with the ``iaa`` settings."""
    i = cfg.iaa
    return IAALoss(loss, num_classes, dim, miner=miner, num_copies=i.iaa_copies, lam=i.iaa_lambda,
                   seed=cfg.train.seed, momentum=i.iaa_momentum, class_switch=i.iaa_class_switch,
                   neighbour_correction=i.neighbour_correction, num_neighbours=i.iaa_neighbours, beta=i.iaa_beta,
                   gamma=i.iaa_gamma, tau=i.iaa_tau, sigma_mean=i.iaa_sigma_mean, sigma_cov=i.iaa_sigma_cov)


class PairLossMethod(DMLMethod):
    """A loss over pairs (or triplets) of the batch, which IAA's synthetic references can join."""

    sections = ("dml", "iaa", "mdr")


class Contrastive(PairLossMethod):
    def build_loss(self, cfg: DMLConfig, num_classes: int, dim: int) -> tuple[nn.Module, None]:
        margins = {"pos_margin": cfg.contrastive_pos_margin, "neg_margin": cfg.contrastive_neg_margin}
        if cfg.contrastive_distance == "cosine":
            return losses.ContrastiveLoss(**margins, distance=CosineSimilarity()), None
        return losses.ContrastiveLoss(**margins), None


class MultiSimilarity(PairLossMethod):
    """Multi-Similarity loss with its miner (Wang et al. 2019), at the IAA paper's settings by default."""

    def build_loss(self, cfg: DMLConfig, num_classes: int, dim: int) -> tuple[nn.Module, nn.Module]:
        return multi_similarity(cfg.ms_thresh, cfg.ms_margin, cfg.ms_scale_pos, cfg.ms_scale_neg)


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


class Triplet(PairLossMethod):
    def build_loss(self, cfg: DMLConfig, num_classes: int, dim: int) -> tuple[nn.Module, nn.Module]:
        return (losses.TripletMarginLoss(margin=cfg.triplet_margin),
                miners.TripletMarginMiner(margin=cfg.triplet_margin, type_of_triplets=cfg.triplet_miner))
