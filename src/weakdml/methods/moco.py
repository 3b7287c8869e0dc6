"""MoCo v2 pretraining as a method (``moco``; ``weakdml pretrain``): the backbone learns from every training image,
labelled or not, without reading a label (selfsup/moco.py holds the pieces: queue, momentum encoder, InfoNCE, MLP
projection, shuffle-BN; data/augment_contrastive.py the aug+ views).

The embedding is the backbone's pooled features, L2-normalised (``--embedding-dim 0``): what later stages (SPICE)
and other methods (``--pretrained RUN_DIR``) start from. Where some images are labelled, a weighted-kNN classifier
over their embeddings (k 200, T 0.1, as MoCo's monitor) gives the validation and test accuracy of each epoch, for
display only. ``best.pt`` is the last epoch's: the loss is no guide, it rises while the queue fills with real keys
in place of its random start.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from weakdml.config import Config
from weakdml.data.augment_contrastive import aug_plus
from weakdml.data.draws import Draws
from weakdml.data.types import TrainData
from weakdml.engine import dist
from weakdml.errors import UserError
from weakdml.evaluation.weighted_knn import weighted_knn_scores
from weakdml.methods.base import Batch, Method, Scorer
from weakdml.models.embedding import EmbeddingNet
from weakdml.selfsup.moco import MoCo

KNN_K, KNN_TEMPERATURE = 200, 0.1
# What `weakdml pretrain` (and `weakdml cluster`) change in the defaults of `train` (a flag still overrides each): MoCo
# v2's optimisation (SGD, lr 0.03 for a batch of 256, weight decay 1e-4, cosine at every step) and the pooled
# features as the embedding.
PRETRAIN_DEFAULTS = {"method": "moco", "embedding_dim": 0, "optimizer": "sgd", "lr": 0.03, "weight_decay": 1e-4,
                     "schedule_unit": "step", "batch_size": 256}


class PooledFeatures(nn.Module):
    """The embedding network's pooled backbone features (its input normalisation included): MoCo's encoder."""

    def __init__(self, model: EmbeddingNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(images)


class MoCoPretraining(Method):
    """Two aug+ views of each image of a batch; the query encoder (the run's network and the projection) is
    trained with InfoNCE against the momentum encoder's keys and the queue."""

    needs_labels = False
    monitor = "last"
    sections = ("moco",)
    loss_settings = ("--moco-temperature",)
    shuffles_batchnorm = True

    def __init__(self, model: EmbeddingNet, data: TrainData, cfg: Config) -> None:
        super().__init__(model, data, cfg)
        if cfg.model.embedding_dim:
            raise UserError("moco trains the backbone's pooled features, which later stages start from: give "
                            "--embedding-dim 0 (weakdml pretrain sets it)")
        m = cfg.moco
        images = len(data.labeled) + len(data.unlabeled)
        self.moco = MoCo(PooledFeatures(model), model.dim, min(m.moco_queue, images), m.moco_dim, m.moco_momentum,
                         m.moco_temperature, m.mlp, m.shuffle_groups,
                         generator=torch.Generator().manual_seed(cfg.train.seed))

    def batches(self, epoch: int) -> Iterator[Batch]:
        """Every training image once, labelled and unlabelled alike, in full batches (MoCo drops the last one; a
        data set smaller than a batch is one batch)."""
        n_labeled = len(self.data.labeled)
        n = n_labeled + len(self.data.unlabeled)
        order = torch.randperm(n, generator=self.generator)
        size = min(self.cfg.train.batch_size, n)
        for start in range(0, n - size + 1, size):
            index = order[start:start + size]
            yield Batch(index[index < n_labeled], index[index >= n_labeled] - n_labeled)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = torch.cat([batch.images, batch.unlabeled_images])  # (B, C, H, W) uint8; labels are not read
        crop, rows = (self.cfg.moco.moco_crop_min, 1.0), batch.all_rows
        draws = Draws.of(self.generator, len(images), rows)
        query, key = (aug_plus(images, draws, crop_scale=crop, flip=self.data.flip) for _ in range(2))
        positions = rows.part.to(self.device) if dist.world_size() > 1 else None
        return {"loss": self.moco(query, key, self.generator, positions=positions)}

    def scorer(self) -> Scorer | None:
        """Weighted kNN over the labelled images' embeddings (display only); None without labelled images."""
        if len(self.data.labeled) == 0:
            return None
        bank = self.embed_all(self.data.labeled)
        labels = self.data.labeled.labels.to(bank.device)
        return lambda embeddings: weighted_knn_scores(embeddings, bank, labels, KNN_K, KNN_TEMPERATURE,
                                                      self.data.num_classes).clamp_min(1e-30).log()
