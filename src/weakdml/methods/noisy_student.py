"""MbDML4 = MbDML3 + Noisy Student Training (Xie et al., CVPR 2020; docs/methods.md, Noisy Student).

The pipeline (``weakdml.pipelines.noisy_student``) trains a teacher (``NoisyStudentTeacher``: the MbDML3 loss), has
it pseudo-label the unlabelled part, and trains a student (``NoisyStudent``) on the labelled batches (MbDML3 loss),
each with ``--unlabeled-ratio`` times as many pseudo-labelled images (cross-entropy of the NNGK classifier against
the targets, weight ``--scale-nst``) under noise — augmentation, dropout, stochastic depth, set in the student's own
settings. The student is the next round's teacher. Only predictions are used: the unlabelled part's labels are -1
and never read.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from weakdml.config import Config
from weakdml.data.types import TrainData
from weakdml.methods.base import Batch
from weakdml.methods.mbdml import MbDML3
from weakdml.models.embedding import EmbeddingNet


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


class NoisyStudentTeacher(MbDML3):
    """The MbDML3 loss under MbDML4's name (its --scale-mixup default is the original's MbDML4 command's)."""

    name = "mbdml4"
    default_scale_mixup = 1.0
    sections = ("nngk", "mixup", "nst")

    def with_pseudo_labels(self, batch: Batch, supervised: torch.Tensor, pseudo: torch.Tensor,
                           pseudo_rows: int | torch.Tensor, all_pseudo_rows: int | torch.Tensor) -> torch.Tensor:
        """MbDML3's loss (a mean over the labelled rows) + scale_nst × the pseudo-label loss (a mean over this
        process's ``pseudo_rows`` of the batch's ``all_pseudo_rows`` pseudo-labelled ones), each mean weighted by the
        process's rows of its own part, so that the sum is the whole batch's loss on any number of processes."""
        labeled = batch.mean_weight(len(batch.index), len(batch.global_index))
        return labeled * supervised + self.cfg.nst.scale_nst * batch.mean_weight(pseudo_rows, all_pseudo_rows) * pseudo


class NoisyStudent(NoisyStudentTeacher):
    """A student: ``pseudo`` holds the teacher's ``targets`` (N_unlabelled, C) and the ``mask`` (N,) of the images
    kept."""

    def __init__(self, model: EmbeddingNet, data: TrainData, cfg: Config, pseudo: dict[str, torch.Tensor]) -> None:
        super().__init__(model, data, cfg)
        self.targets, self.mask = pseudo["targets"], pseudo["mask"].bool()
        if self.targets.shape != (len(data.unlabeled), data.num_classes) or self.mask.shape != (len(data.unlabeled),):
            raise ValueError("the pseudo-labels do not match the unlabelled part")

    def batches(self, epoch: int) -> Iterator[Batch]:
        """A pass over the labelled part; each labelled batch comes with ``unlabeled_ratio`` times as many
        pseudo-labelled images, cycling through them (reshuffled at every pass). Epochs are thus the length of the
        teacher's."""
        if not self.mask.any():
            yield from super().batches(epoch)
            return
        pool = torch.nonzero(self.mask).flatten()
        draw = self._cycle(pool, self.cfg.train.batch_size * self.cfg.nst.unlabeled_ratio)
        for batch in super().batches(epoch):
            batch.unlabeled_index = next(draw)
            yield batch

    def _cycle(self, pool: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
        """Chunks of ``size`` from ``pool``, reshuffled at every pass."""
        while True:
            yield from pool[torch.randperm(len(pool), generator=self.generator)].split(size)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        losses = self.supervised_losses(batch)
        if batch.unlabeled_images is None:
            return losses
        targets = self.targets[batch.unlabeled_index.cpu()].to(self.device)
        scores = self.head.query_log_scores(self.model(self.view(batch.unlabeled_images, rows=batch.unlabeled_rows)))
        unlabeled = soft_cross_entropy(scores, targets)
        losses["loss"] = self.with_pseudo_labels(batch, losses["loss"], unlabeled, len(batch.unlabeled_index),
                                                 len(batch.global_unlabeled_index))
        return losses | {"unlabeled": unlabeled}
