"""MbDML4's online variant (``--nst-variant online``, the original code's scheme): one network; from epoch
``--nst-start`` on, each step also labels a random unlabelled batch with the current network and keeps a sample when
max p > ``--c-tau`` × the mean max p of the labelled batch; L = MbDML3 + scale_nst · CE(strong view, pseudo-label),
the mean over the batch's kept images. An empty selection contributes zero. The unlabelled part's labels are -1 and
never read.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from weakdml.data.draws import Rows
from weakdml.engine import dist
from weakdml.methods.base import Batch
from weakdml.methods.noisy_student import NoisyStudentTeacher


class OnlineNoisyStudent(NoisyStudentTeacher):
    def batches(self, epoch: int) -> Iterator[Batch]:
        """Labelled batches; from ``--nst-start`` on each with ``--unlabeled-ratio`` times as many unlabelled images
        drawn at random."""
        n = len(self.data.unlabeled)
        size = self.cfg.train.batch_size * self.cfg.nst.unlabeled_ratio
        for batch in super().batches(epoch):
            if epoch >= self.cfg.nst.nst_start and n > 0:
                batch.unlabeled_index = torch.randint(0, n, (size,), generator=self.generator)
            yield batch

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        losses = self.supervised_losses(batch)
        if batch.unlabeled_images is None:
            return losses
        unlabeled, kept, total_kept = self._pseudo_loss(batch)
        losses["loss"] = self.with_pseudo_labels(batch, losses["loss"], unlabeled, kept, total_kept.clamp(min=1))
        return losses | {"unlabeled": unlabeled, "pseudo_fraction": total_kept / len(batch.global_unlabeled_index)}

    def _pseudo_loss(self, batch: Batch) -> tuple[torch.Tensor, int, torch.Tensor]:
        """The original's threshold: max p > c_tau × mean max p of the (clean) labelled batch; the mean cross-entropy
        of this process's kept images, how many it kept, and how many the whole batch kept. The labelling passes run
        the network in eval mode, as a teacher labels: no dropout, and BatchNorm statistics left alone. Thresholds,
        draws and selection are the global batch's, whatever the number of processes."""
        self.model.eval()
        with torch.no_grad():
            labelled_conf = self.head.train_log_scores(self.model(self.view(batch.images, "none")), batch.index)
            confidence_sum = dist.all_sum(labelled_conf.softmax(1).max(1).values.sum())
            threshold = self.cfg.nst.c_tau * confidence_sum / len(batch.global_index)
            weak = self.view(batch.unlabeled_images, "weak", batch.unlabeled_rows)
            probs = self.head.query_log_scores(self.model(weak)).softmax(1)
            confidence, pseudo = probs.max(1)
            keep = confidence > threshold
            total_kept = dist.all_sum(keep.sum())
        self.model.train(self.training)
        rows = batch.unlabeled_rows
        kept_rows = Rows(rows.total, rows.positions()[keep.cpu()])  # the kept images' draws, as if all were augmented
        strong = self.view(batch.unlabeled_images[keep], "strong", kept_rows)
        if not keep.any():
            return torch.zeros((), device=self.device), 0, total_kept
        scores = self.head.query_log_scores(self.model(strong))
        return F.cross_entropy(scores, pseudo[keep]), int(keep.sum()), total_kept
