"""MbDML4 = MbDML3 + Noisy Student Training (Xie et al., CVPR 2020; METHODS.md §3).

Teacher–student (default): stage 0 trains a teacher with the MbDML3 loss on the labelled part. Each later stage
(``--nst-rounds``) starts from the best-on-validation weights of the stage before, which label the unlabelled part:
a sample is kept when the teacher's NNGK probability max p ≥ ``--nst-threshold``; optionally classes are balanced
(each class capped at the median per-class count, most confident first); targets are hard (one-hot) or soft
(the teacher's probabilities). The student is then re-initialised and trained with noise — strong augmentation
(RandAugment + cutout), dropout ``--nst-dropout``, stochastic depth where the backbone has residual blocks — on
labelled batches (MbDML3 loss) plus pseudo-labelled batches (cross-entropy of the NNGK classifier against the
targets, weight ``--scale-nst``). The student is the next round's teacher.

Online (``--nst-variant online``, the original code's scheme): one network; from epoch ``--nst-start`` on, each step
also labels an unlabelled batch with the current network and keeps a sample when max p > c_tau × the mean max p of
the labelled batch; L = MbDML3 + scale_nst · CE(strong view, pseudo-label). An empty selection contributes zero.

Only predictions are used: the unlabelled part's labels are -1 and never read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from weakdml.config import Config
from weakdml.data.types import TrainData
from weakdml.methods.base import Batch
from weakdml.methods.mbdml import MbDML3
from weakdml.models.embedding import EmbeddingNet

log = logging.getLogger("weakdml")


def select_pseudo_labels(probs: torch.Tensor, threshold: float, balance: bool) -> torch.Tensor:
    """Mask (N,) of samples whose max probability reaches ``threshold``; with ``balance``, each class keeps at most
    the median of the per-class counts (over classes with any), its most confident samples first."""
    confidence, predicted = probs.max(1)
    keep = confidence >= threshold
    if not balance or not keep.any():
        return keep
    counts = torch.bincount(predicted[keep], minlength=probs.shape[1])
    cap = int(counts[counts > 0].float().quantile(0.5).round().item())
    balanced = torch.zeros_like(keep)
    for c in torch.nonzero(counts).flatten().tolist():
        members = torch.nonzero(keep & (predicted == c)).flatten()
        best = members[confidence[members].argsort(descending=True)[:cap]]
        balanced[best] = True
    return balanced


def soft_cross_entropy(log_scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """−Σ_c t_c log p_c, averaged over rows; p = softmax(log_scores)."""
    return -(targets * F.log_softmax(log_scores, dim=1)).sum(1).mean()


class MbDML4(MbDML3):
    name = "mbdml4"

    def __init__(self, model: EmbeddingNet, data: TrainData, cfg: Config) -> None:
        super().__init__(model, data, cfg)
        n_unlabeled, classes = len(data.unlabeled), data.num_classes
        self.register_buffer("stage", torch.tensor(0))
        self.register_buffer("pseudo_targets", torch.zeros(n_unlabeled, classes))
        self.register_buffer("pseudo_mask", torch.zeros(n_unlabeled, dtype=torch.bool))

    @property
    def online(self) -> bool:
        return self.cfg.nst.nst_variant == "online"

    @property
    def is_student(self) -> bool:
        return int(self.stage) > 0

    def stages(self) -> list[int]:
        if self.online:
            return [self.cfg.train.epochs]
        n = self.cfg.nst
        return [self.cfg.train.epochs] + [n.nst_epochs or self.cfg.train.epochs] * n.nst_rounds

    # -- teacher -> student ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def begin_stage(self, stage: int) -> None:
        """Label the unlabelled part with the teacher (these weights), then re-initialise as a noisy student."""
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
        for module in self.model.modules():
            if hasattr(module, "reset_parameters") and module is not self.model:
                module.reset_parameters()
        self.head.log_weights.zero_()
        self.head.refreshed_at.fill_(-1)  # the student's bank is built at its first epoch
        self.stage.fill_(stage)

    def on_epoch_start(self, epoch: int) -> None:
        self.model.dropout.p = self.cfg.nst.nst_dropout if self.is_student else self.cfg.model.dropout
        super().on_epoch_start(epoch)

    def view(self, images: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        if kind is None and self.is_student:
            kind = self.cfg.nst.nst_augment
        return super().view(images, kind)

    # -- batches --------------------------------------------------------------------------------------------------
    def batches(self, epoch: int) -> Iterator[Batch]:
        """Labelled batches, each with an unlabelled batch of ``unlabeled_ratio`` × the size when one is used.

        A student's epoch is a pass over its pseudo-labelled images (labelled batches cycle); otherwise a pass over
        the labelled part (the online variant draws unlabelled images at random)."""
        bs, ratio = self.cfg.train.batch_size, self.cfg.nst.unlabeled_ratio
        if self.is_student and self.pseudo_mask.any():
            pool = torch.nonzero(self.pseudo_mask.cpu()).flatten()
            pool = pool[torch.randperm(len(pool), generator=self.generator)]
            chunks = list(pool.split(bs * ratio))
        elif self.online and epoch >= self.cfg.nst.nst_start and len(self.data.unlabeled) > 0:
            chunks = None
        else:
            yield from super().batches(epoch)
            return
        steps = len(chunks) if chunks is not None else -(-len(self.data.labeled) // bs)
        labelled = self._cycle_labelled(bs)
        for step in range(steps):
            batch = next(labelled)
            if chunks is not None:
                u_index = chunks[step]
            else:
                u_index = torch.randint(0, len(self.data.unlabeled), (bs * ratio,), generator=self.generator)
            batch.unlabeled_images = self.data.unlabeled.images[u_index].to(self.device)
            batch.unlabeled_index = u_index.to(self.device)
            yield batch

    def _cycle_labelled(self, batch_size: int) -> Iterator[Batch]:
        while True:
            yield from self.shuffled_batches(self.data.labeled, batch_size)

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
        """The original's threshold: max p > c_tau × mean max p of the (clean) labelled batch."""
        with torch.no_grad():
            labelled_conf = self.head.train_log_scores(self.model(self.view(batch.images, "none")), batch.index)
            threshold = self.cfg.nst.c_tau * labelled_conf.softmax(1).max(1).values.mean()
            probs = self.head.query_log_scores(self.model(self.view(batch.unlabeled_images, "weak"))).softmax(1)
            confidence, pseudo = probs.max(1)
            keep = confidence > threshold
        if not keep.any():
            return torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        scores = self.head.query_log_scores(self.model(self.view(batch.unlabeled_images[keep], "strong")))
        return F.cross_entropy(scores, pseudo[keep]), keep.float().mean()
