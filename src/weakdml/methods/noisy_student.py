"""MbDML4 = MbDML3 + Noisy Student Training (Xie et al., CVPR 2020; docs/methods.md, Noisy Student).

Teacher–student (default): stage 0 trains a teacher with the MbDML3 loss on the labelled part. Each later stage
(``--nst-rounds``) starts from the best-on-validation weights of the stage before, which label the unlabelled part:
the images whose NNGK probability max p ≥ ``--nst-threshold`` are kept, or with ``--nst-balance`` (default) that
many images spread evenly over the predicted classes, most confident first (Xie et al.'s balancing); targets are hard
(one-hot) or soft (the teacher's probabilities). The student is then re-initialised to the weights the teacher started
from (random, or ``--pretrained``), or with ``--nst-init teacher`` keeps the teacher's weights, or — a larger student,
``--nst-backbone``/``--nst-width`` — is a new network of that architecture (its random start drawn from the seed
alone, so the teacher's training is the same whatever the student), and trained with noise
— strong augmentation (RandAugment + cutout), dropout ``--nst-dropout``, stochastic depth ``--nst-stochastic-depth``
where the backbone has residual blocks — on labelled batches (MbDML3 loss), each
with ``--unlabeled-ratio`` times as many pseudo-labelled images (cross-entropy of the NNGK classifier against the
targets, weight ``--scale-nst``). The student is the next round's teacher.

Online (``--nst-variant online``, the original code's scheme): one network; from epoch ``--nst-start`` on, each step
also labels an unlabelled batch with the current network and keeps a sample when max p > c_tau × the mean max p of
the labelled batch; L = MbDML3 + scale_nst · CE(strong view, pseudo-label). An empty selection contributes zero.

Only predictions are used: the unlabelled part's labels are -1 and never read.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from weakdml.config import Config, ModelConfig
from weakdml.data.types import TrainData
from weakdml.errors import UserError
from weakdml.methods.base import Batch
from weakdml.methods.mbdml import MbDML3
from weakdml.models.backbones import set_stochastic_depth
from weakdml.models.embedding import EmbeddingNet

log = logging.getLogger("weakdml")


def select_pseudo_labels(probs: torch.Tensor, threshold: float, balance: bool) -> torch.Tensor:
    """Mask (N,) of the images to pseudo-label. Without ``balance``: those whose max probability reaches
    ``threshold``. With it, as in Noisy Student: the threshold only sets how many (n); each predicted class gets its
    n // C most confident images, so that classes the teacher is less sure of are not left out, and the most
    confident of the others fill the selection to n (the remainder, and the places of classes predicted too
    rarely)."""
    confidence, predicted = probs.max(1)
    keep = confidence >= threshold
    if not balance or not keep.any():
        return keep
    n, classes = int(keep.sum()), probs.shape[1]
    balanced = torch.zeros_like(keep)
    for c in predicted.unique().tolist():
        members = torch.nonzero(predicted == c).flatten()
        balanced[members[confidence[members].argsort(descending=True)[:n // classes]]] = True
    rest = torch.nonzero(~balanced).flatten()
    balanced[rest[confidence[rest].argsort(descending=True)[:n - int(balanced.sum())]]] = True
    return balanced


def soft_cross_entropy(log_scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """−Σ_c t_c log p_c, averaged over rows; p = softmax(log_scores)."""
    return -(targets * F.log_softmax(log_scores, dim=1)).sum(1).mean()


class MbDML4(MbDML3):
    name = "mbdml4"

    def __init__(self, model: EmbeddingNet, data: TrainData, cfg: Config) -> None:
        super().__init__(model, data, cfg)
        n_unlabeled, classes = len(data.unlabeled), data.num_classes
        if n_unlabeled == 0 and not self.online and cfg.nst.nst_rounds > 0:
            raise UserError("mbdml4 has no unlabelled images to pseudo-label: use --labeled-fraction below 1, add "
                            "--unlabeled-dir, or train mbdml3")
        self.teacher_cfg = cfg.model
        self.student_cfg = dataclasses.replace(cfg.model, backbone=cfg.nst.nst_backbone or cfg.model.backbone,
                                               width=cfg.nst.nst_width or cfg.model.width)
        self._check_student()
        self.network_is_student = False  # self.model has the students' architecture (when they differ)
        start = self._new_network(self.student_cfg) if self.student_architecture_differs else model
        self.initial_weights = {k: v.clone() for k, v in start.state_dict().items()}  # a scratch student's start
        self.register_buffer("stage", torch.tensor(0))
        self.register_buffer("pseudo_targets", torch.zeros(n_unlabeled, classes))
        self.register_buffer("pseudo_mask", torch.zeros(n_unlabeled, dtype=torch.bool))

    @property
    def online(self) -> bool:
        return self.cfg.nst.nst_variant == "online"

    @property
    def is_student(self) -> bool:
        return int(self.stage) > 0

    @property
    def student_architecture_differs(self) -> bool:
        """The students are networks of another architecture than the teacher's (stage 0)."""
        return self.student_cfg != self.teacher_cfg

    def _check_student(self) -> None:
        if not self.student_architecture_differs:
            return
        if self.online:
            raise UserError("the online variant trains one network: --nst-backbone and --nst-width need "
                            "--nst-variant teacher-student")
        if self.cfg.nst.nst_init == "teacher":
            raise UserError("a student of another architecture cannot start from its teacher's weights: use "
                            "--nst-init scratch with --nst-backbone/--nst-width")
        if self.cfg.model.pretrained:
            raise UserError("--pretrained initialises the teacher's backbone; a student of another architecture "
                            "(--nst-backbone/--nst-width) would start random: drop one of them")
        if not self.cfg.model.embedding_dim:
            raise UserError("teacher and student must embed into one space for the NNGK head: set --embedding-dim "
                            "(e.g. 64) with --nst-backbone/--nst-width")

    def _new_network(self, cfg: ModelConfig) -> EmbeddingNet:
        """A network of ``cfg``'s architecture with this model's input normalisation, on its device; random weights
        drawn from the run's seed in a private random stream."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.train.seed)
            net = EmbeddingNet(cfg, self.model.mean.shape[1], self.data.labeled.images.shape[-1],
                               self.model.mean.flatten(), self.model.std.flatten())
        return net.to(self.device)

    def _use_architecture(self, student: bool) -> None:
        """Make ``self.model`` a network of the teacher's or the students' architecture (when they differ)."""
        if self.student_architecture_differs and self.network_is_student != student:
            self.model = self._new_network(self.student_cfg if student else self.teacher_cfg)
            self.network_is_student = student

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """With a student of another architecture, a checkpoint holds the network of its stage: switch to that
        architecture before loading."""
        self._use_architecture(student=int(state_dict["stage"]) > 0)
        return super().load_state_dict(state_dict, strict, assign)

    def stages(self) -> list[int]:
        if self.online:
            return [self.cfg.train.epochs]
        n = self.cfg.nst
        return [self.cfg.train.epochs] + [n.nst_epochs or self.cfg.train.epochs] * n.nst_rounds

    # -- teacher -> student ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def begin_stage(self, stage: int) -> None:
        """Label the unlabelled part with the teacher (these weights), then become the noisy student: re-initialised
        unless ``--nst-init teacher``."""
        n = self.cfg.nst
        probs = self.predict_all(self.data.unlabeled.images).softmax(1)
        mask = select_pseudo_labels(probs, n.nst_threshold, n.nst_balance)
        targets = probs if n.nst_soft else F.one_hot(probs.argmax(1), probs.shape[1]).float()
        self.pseudo_targets.copy_(targets)
        self.pseudo_mask.copy_(mask)
        counts = torch.bincount(probs.argmax(1)[mask], minlength=probs.shape[1]).tolist()
        if mask.any():
            log.info(f"noisy student round {stage}: {int(mask.sum())} of {len(mask)} unlabelled images pseudo-labelled "
                     f"(max p ≥ {n.nst_threshold}{', balanced' if n.nst_balance else ''}); per class {counts}")
        else:
            log.warning(f"noisy student round {stage}: no unlabelled image reached max p ≥ {n.nst_threshold}; the "
                        f"student trains on the labelled part only (lower --nst-threshold to use unlabelled data)")
        if n.nst_init == "scratch":
            self._use_architecture(student=True)
            self.model.load_state_dict(self.initial_weights)
            self.head.log_weights.zero_()
            self.head.log_sigma.fill_(math.log(self.cfg.nngk.sigma))
        self.head.refreshed_at.fill_(-1)  # the student's bank is built at its first epoch
        self.stage.fill_(stage)

    def on_epoch_start(self, epoch: int) -> None:
        n, m = self.cfg.nst, self.cfg.model
        self.model.dropout.p = n.nst_dropout if self.is_student else m.dropout
        set_stochastic_depth(self.model, n.nst_stochastic_depth if self.is_student else m.stochastic_depth)
        super().on_epoch_start(epoch)

    def view(self, images: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        if kind is None and self.is_student:
            kind = self.cfg.nst.nst_augment
        return super().view(images, kind)

    # -- batches --------------------------------------------------------------------------------------------------
    def batches(self, epoch: int) -> Iterator[Batch]:
        """A pass over the labelled part; with unlabelled images in use, each labelled batch comes with
        ``unlabeled_ratio`` times as many of them: a student cycles through its pseudo-labelled images, the online
        variant draws at random. Epochs are thus the same length for teacher and student."""
        bs, ratio = self.cfg.train.batch_size, self.cfg.nst.unlabeled_ratio
        if self.is_student and self.pseudo_mask.any():
            pool = torch.nonzero(self.pseudo_mask.cpu()).flatten()
            draw = self._cycle(pool, bs * ratio)
        elif self.online and epoch >= self.cfg.nst.nst_start and len(self.data.unlabeled) > 0:
            draw = iter(lambda: torch.randint(0, len(self.data.unlabeled), (bs * ratio,), generator=self.generator),
                        None)
        else:
            yield from super().batches(epoch)
            return
        for batch in super().batches(epoch):
            u_index = next(draw)
            batch.unlabeled_images = self.data.unlabeled.images[u_index].to(self.device)
            batch.unlabeled_index = u_index.to(self.device)
            yield batch

    def _cycle(self, pool: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
        """Chunks of ``size`` from ``pool``, reshuffled at every pass."""
        while True:
            yield from pool[torch.randperm(len(pool), generator=self.generator)].split(size)

    # -- losses ---------------------------------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        losses = self.supervised_losses(batch)
        if batch.unlabeled_images is None:
            return losses
        if self.online:
            unlabeled, selected = self._online_pseudo_loss(batch)
        else:
            targets = self.pseudo_targets[batch.unlabeled_index]
            scores = self.head.query_log_scores(self.model(self.view(batch.unlabeled_images)))
            unlabeled, selected = soft_cross_entropy(scores, targets), torch.tensor(1.0)
        losses["loss"] = losses["loss"] + self.cfg.nst.scale_nst * unlabeled
        return losses | {"unlabeled": unlabeled, "pseudo_fraction": selected}

    def _online_pseudo_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The original's threshold: max p > c_tau × mean max p of the (clean) labelled batch. The labelling passes
        run the network in eval mode, as a teacher labels: no dropout, and BatchNorm statistics left alone."""
        self.model.eval()
        with torch.no_grad():
            labelled_conf = self.head.train_log_scores(self.model(self.view(batch.images, "none")), batch.index)
            threshold = self.cfg.nst.c_tau * labelled_conf.softmax(1).max(1).values.mean()
            probs = self.head.query_log_scores(self.model(self.view(batch.unlabeled_images, "weak"))).softmax(1)
            confidence, pseudo = probs.max(1)
            keep = confidence > threshold
        self.model.train(self.training)
        if not keep.any():
            return torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        scores = self.head.query_log_scores(self.model(self.view(batch.unlabeled_images[keep], "strong")))
        return F.cross_entropy(scores, pseudo[keep]), keep.float().mean()
