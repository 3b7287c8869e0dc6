"""What every training method offers the engine: index batches, a training step, parameter groups, embeddings and
(where it has one) a classifier.

A method is an ``nn.Module`` that owns the embedding network and whatever its loss needs (heads, banks), so one
``state_dict`` holds everything a checkpoint must restore. It sees image sources and tensors only, never files or the
CLI. It yields *index* batches; the engine loads their images (ahead of time, per rank) and calls the method through
``forward``, so that a DistributedDataParallel wrapper sees the call. The labels of the unlabelled part never reach
it: ``TrainData.unlabeled`` carries -1 labels by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from weakdml.config import Config
from weakdml.data.augment import augment, eval_view
from weakdml.data.draws import Draws, Rows
from weakdml.data.sources import ImageSet, ImageSource
from weakdml.data.types import TrainData
from weakdml.engine import dist
from weakdml.engine.optim import ParamGroup
from weakdml.models.embedding import EmbeddingNet

Scorer = Callable[[torch.Tensor], torch.Tensor]  # embeddings (B, D) -> class log-scores (B, C)


@dataclass
class Batch:
    """Indices into the labelled part (and, for semi-supervised methods, into the unlabelled part), as the method
    draws them: the global batch. The engine keeps those as ``all_index`` (``all_unlabeled_index``) and fills in
    this process's rows of them (all of them with one process): ``index``, uint8 ``images`` (B, C, H, W) and
    ``labels``, on the device."""

    index: torch.Tensor
    unlabeled_index: torch.Tensor | None = None
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    unlabeled_images: torch.Tensor | None = None
    all_index: torch.Tensor | None = None
    all_unlabeled_index: torch.Tensor | None = None

    @property
    def global_index(self) -> torch.Tensor:
        """The global batch's labelled indices (``index`` itself before the engine has filled the batch)."""
        return self.index if self.all_index is None else self.all_index

    @property
    def global_unlabeled_index(self) -> torch.Tensor:
        assert self.unlabeled_index is not None
        return self.unlabeled_index if self.all_unlabeled_index is None else self.all_unlabeled_index

    @property
    def rows(self) -> Rows:
        """This process's rows of the global batch's labelled part."""
        n = len(self.global_index)
        return Rows(n, dist.rows(n))

    @property
    def unlabeled_rows(self) -> Rows:
        n = len(self.global_unlabeled_index)
        return Rows(n, dist.rows(n))

    @property
    def share(self) -> float:
        """This process's share of the filled batch's images, labelled and unlabelled together (1 with one process):
        the engine weights its loss by N times it (``rank_loss``)."""
        def count(index: torch.Tensor | None) -> int:
            return 0 if index is None else len(index)
        total = count(self.all_index) + count(self.all_unlabeled_index)
        return 1.0 if total == 0 else (count(self.index) + count(self.unlabeled_index)) / total

    def mean_weight(self, local: int | torch.Tensor, total: int | torch.Tensor) -> float | torch.Tensor:
        """The factor that turns a mean over ``local`` of this process's rows into its part of the mean over the
        ``total`` such rows of the global batch once the engine has weighted the loss by the process's ``share``:
        (local / total) / share. 1 with one process, and whenever every part splits as the batch does; needed
        for a loss made of means over different parts (labelled, pseudo-labelled, a selection of rows)."""
        return (local / total) / self.share if self.share else 0.0

    @property
    def all_rows(self) -> Rows:
        """This process's rows of the labelled and unlabelled parts taken together, labelled first."""
        labeled, unlabeled = self.rows, self.unlabeled_rows
        positions = torch.cat([labeled.positions(), labeled.total + unlabeled.positions()])
        return Rows(labeled.total + unlabeled.total, positions)


class Method(nn.Module):
    """Base class: shuffled batches of the labelled part, weak augmentation, one parameter group, the classifier of
    ``classify`` (a method without one returns no scorer)."""

    l2_normalize_by_default = True  # embeddings on the unit sphere unless --(no-)l2-normalize says otherwise
    needs_labels = True  # False: trains without any label (--labeled-fraction 0 allowed)
    monitor: str | None = None  # what best.pt follows, e.g. "train_loss:min"; None: the task's choice
    sections: tuple[str, ...] = ()  # the config sections of its own settings (help, comparisons)
    task: str | None = None  # the evaluation protocol it is made for (e.g. "clustering"); None: the data set's
    loss_settings: tuple[str, ...] = ()  # flags besides --lr that set the loss's scale (named if it becomes NaN)
    shuffles_batchnorm = False  # True: its BatchNorm statistics must stay per process (MoCo's shuffle-BN)

    def __init__(self, model: EmbeddingNet, data: TrainData, cfg: Config) -> None:
        super().__init__()
        self.model = model
        self.data = data
        self.cfg = cfg
        self.generator = torch.Generator()

    @classmethod
    def l2_normalizes(cls, cfg: Config) -> bool:
        """Whether its embeddings are L2-normalised when --(no-)l2-normalize is not given."""
        return cls.l2_normalize_by_default

    @classmethod
    def check_data(cls, cfg: Config, data: TrainData) -> None:
        """Refuse (UserError) training data it cannot learn from, before the run writes anything."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def seed_epoch(self, epoch: int) -> None:
        """Every random choice of an epoch (order, augmentation) derives from (seed, epoch): resuming is exact."""
        self.generator.manual_seed(self.epoch_seed(epoch))

    def epoch_seed(self, epoch: int) -> int:
        """The seed of an epoch's random choices: a function of (--seed, epoch) only."""
        return self.cfg.train.seed * 100_003 + epoch

    def start_from(self, state: dict[str, Any]) -> None:
        """Take the weights of an earlier stage's method (same architecture) as this stage's start."""
        self.load_state_dict(state)

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch's batches are drawn (e.g. to refresh a support bank)."""

    def batches(self, epoch: int) -> Iterator[Batch]:
        """The epoch's index batches; by default the labelled part, shuffled, last batch kept if ≥ 2 images."""
        yield from self.shuffled_batches(len(self.data.labeled), self.cfg.train.batch_size)

    def shuffled_batches(self, n: int, batch_size: int) -> Iterator[Batch]:
        order = torch.randperm(n, generator=self.generator)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if len(idx) >= 2:
                yield Batch(idx)

    def global_labels(self, batch: Batch) -> torch.Tensor:
        """The labels of the whole global batch's labelled part (B_global,), on the device: every process knows
        them without communication."""
        return self.data.labeled.labels[batch.global_index.cpu()].to(self.device)

    def parameter_groups(self) -> list[ParamGroup]:
        """Named groups of parameters with their learning-rate factor and weight decay: by default one group, or the
        backbone and everything after it (at ``--embedding-lr-factor`` times the rate) when that factor is not 1."""
        factor = self.cfg.optim.embedding_lr_factor
        if factor == 1:
            return [ParamGroup("all", list(self.parameters()))]
        backbone = {id(p) for p in self.model.backbone.parameters()}
        rest = [p for p in self.parameters() if id(p) not in backbone]
        return [ParamGroup("backbone", list(self.model.backbone.parameters())), ParamGroup("embedding", rest, factor)]

    def view(self, images: torch.Tensor, kind: str | None = None, rows: Rows | None = None) -> torch.Tensor:
        """An augmented float view of a uint8 batch (kind defaults to the configured augmentation); ``rows``: the
        images are these rows of a global batch (``Batch.rows``), drawn for as one process would."""
        draws = Draws.of(self.generator, len(images), rows)
        return augment(images, kind or self.cfg.data.augment, self.data.flip, draws, self.data.crop)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.training_step(batch)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Losses of one batch: must hold "loss"; may hold "accuracy" (on the batch) and other terms to log."""
        raise NotImplementedError

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class log-scores (B, C) of embeddings (argmax = prediction)."""
        raise NotImplementedError

    def scorer(self) -> Scorer | None:
        """The classifier as it stands now: a function from embeddings to class log-scores, or None (no classifier).
        Built once per evaluation, so a method that embeds its labelled images to classify does so once."""
        return self.classify if type(self).classify is not Method.classify else None

    def evaluated_network(self) -> nn.Module:
        """The network that embeds for evaluation: the trained one, or a method's moving average of it."""
        return self.model

    @torch.no_grad()
    def embed_all(self, images: ImageSource | torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Embeddings (N, D) of a source's images (or of a uint8 tensor) as test images are seen (centre-cropped
        where the data set crops), in eval mode, without gradient. With several processes each embeds its rows and
        every process gets all of them: every process must call it alike."""
        source = images if isinstance(images, ImageSource) else ImageSet(images, torch.zeros(len(images)))
        batch_size = batch_size or self.cfg.train.eval_batch_size
        was_training = self.training
        self.eval()
        index = dist.shard(torch.arange(len(source)))
        network = self.evaluated_network()
        out = [network(eval_view(source.load(index[i:i + batch_size]).to(self.device), self.data.crop))
               for i in range(0, len(index), batch_size)]
        self.train(was_training)
        return dist.gather(torch.cat(out) if out else torch.zeros(0, self.model.dim, device=self.device))

    @torch.no_grad()
    def predict_all(self, images: ImageSource | torch.Tensor) -> torch.Tensor:
        """Class log-scores (N, C) of a source's images by the method's scorer."""
        score = self.scorer()
        if score is None:
            raise ValueError(f"{type(self).__name__} has no classifier")
        emb = self.embed_all(images)
        bs = self.cfg.train.eval_batch_size
        return torch.cat([score(emb[i:i + bs]) for i in range(0, len(emb), bs)]) if len(emb) else emb[:, :0]
