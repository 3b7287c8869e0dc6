"""IAA: intra-class adaptive augmentation as a wrapper around any pytorch-metric-learning pair loss.

Fu et al., "Intra-class Adaptive Augmentation with Neighbor Correction for Deep Metric Learning" (IEEE TMM 2022). Each
real embedding z of class y gets M synthetic copies ẑ_m = z + sqrt(λ) s_y ⊙ ε_m, ε_m ~ N(0, I), where s_y is the
square root of the class's (neighbour-corrected) diagonal variance, the same scale for every copy (the original code
re-applies the square root in its loop, so its copies are scaled by σ, σ^½, σ^¼). The wrapped loss then sees the real
embeddings as anchors and real plus synthetic ones as references; an anchor's positives exclude itself and its own
copies. The wrapped loss's distance L2-normalises both, as the original normalises after synthesis (PML's default).

    loss = IAALoss(MultiSimilarityLoss(alpha=2, beta=40, base=0.5), num_classes=100, embedding_size=512,
                   miner=MultiSimilarityMiner(epsilon=0.1))
    loss.update_statistics(train_embeddings, train_labels)   # every few epochs, from a pass with test transforms
    loss.lam = iaa_lambda(0.8, epoch, epochs)
    loss(embeddings, labels).backward()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from pytorch_metric_learning.losses import BaseMetricLossFunction, GenericPairLoss, TripletMarginLoss
from pytorch_metric_learning.miners import BaseMiner

from weakdml.errors import UserError
from weakdml.losses.class_statistics import ClassStatistics

PairIndices = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
Indices = PairIndices | tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # PML pairs or triplets
WRAPPABLE = (GenericPairLoss, TripletMarginLoss)  # losses that take pairs of anchors and references

# The original's λ decay: λ times 1.0 up to 40 % of training, 0.9 to 60 %, 0.75 to 80 %, 0.6 after.
LAMBDA_DECAY = ((0.4, 1.0), (0.6, 0.9), (0.8, 0.75), (float("inf"), 0.6))


def iaa_lambda(base: float, epoch: int, epochs: int) -> float:
    """λ for ``epoch`` (1-based, as the original) of ``epochs``: ``base`` (intra_lamda, 0.5-0.8) times the decay."""
    progress = epoch / epochs
    return base * next(factor for end, factor in LAMBDA_DECAY if progress <= end)


def iaa_pairs(labels: torch.Tensor, num_copies: int) -> PairIndices:
    """PML pair indices (a1, p, a2, n) of B real anchors against B (1 + M) references (the real ones, then copy 1 of
    every real one, then copy 2, ...): same label except the anchor itself and its own copies, different label."""
    positive, negative = _pair_masks(labels, num_copies)
    return (*torch.nonzero(positive, as_tuple=True), *torch.nonzero(negative, as_tuple=True))


def _pair_masks(labels: torch.Tensor, num_copies: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, B(1+M)) masks of the positive and the negative pairs of :func:`iaa_pairs`."""
    same = labels.unsqueeze(1) == labels.repeat(num_copies + 1).unsqueeze(0)
    return same & ~_own(labels, num_copies), ~same


def _own(labels: torch.Tensor, num_copies: int) -> torch.Tensor:
    """(B, B(1+M)) True where the reference is the anchor itself or one of its copies."""
    return torch.eye(len(labels), dtype=torch.bool, device=labels.device).repeat(1, num_copies + 1)


class IAALoss(torch.nn.Module):
    """A PML pair loss (MultiSimilarityLoss, ContrastiveLoss, TripletMarginLoss, ...) with IAA's synthetic samples.

    ``loss(embeddings (B, D), labels (B,)) -> scalar``: before the first :meth:`update_statistics` it is the plain loss
    (with the miner, if any); after it, the loss over real anchors and real plus ``num_copies`` synthetic references.
    ``lam`` is λ; set it every epoch (e.g. with :func:`iaa_lambda`). A miner is run on the same anchors and
    references with each anchor's own copies (and itself) made infinitely close, so they are neither mined nor move
    its thresholds; its pairs (or triplets) are then restricted to those of :func:`iaa_pairs`. Noise comes from a
    ``torch.Generator`` seeded with ``seed`` on the embeddings' device. The remaining keyword arguments go to
    :class:`ClassStatistics` (momentum, class_switch, neighbour_correction, num_neighbours, beta, gamma, tau, sigmas).
    """

    def __init__(
        self,
        loss: BaseMetricLossFunction,
        num_classes: int,
        embedding_size: int,
        *,
        miner: BaseMiner | None = None,
        num_copies: int = 3,
        lam: float = 0.8,
        seed: int = 0,
        **statistics: float | bool,
    ) -> None:
        super().__init__()
        if not isinstance(loss, WRAPPABLE):
            raise UserError(f"IAALoss wraps pair losses ({', '.join(c.__name__ for c in WRAPPABLE)} and their "
                            f"subclasses, such as MultiSimilarityLoss or ContrastiveLoss); {type(loss).__name__} is "
                            f"not one: it cannot take synthetic samples as references only")
        if num_copies < 1 or lam < 0:
            raise UserError(f"IAA needs num_copies >= 1 and lam >= 0, got {num_copies} and {lam}")
        self.loss, self.miner, self.num_copies, self.lam, self.seed = loss, miner, num_copies, lam, seed
        self.statistics = ClassStatistics(num_classes, embedding_size, **statistics)
        self._generator: torch.Generator | None = None

    def reseed(self, seed: int) -> None:
        """Draw the copies' noise from ``seed`` on (e.g. per epoch, so that a resumed run draws the same)."""
        self.seed, self._generator = seed, None

    def update_statistics(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Refresh the per-class statistics from the embeddings (N, D) of the whole training set (no gradient)."""
        self.statistics.update(embeddings, labels)

    def synthesize(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(M B, D) copies, copy m of row i at row m B + i: z_i + sqrt(λ) s_{y_i} ⊙ ε with a fresh ε per copy."""
        scale = self.statistics.corrected[labels].sqrt().to(embeddings.dtype)  # (B, D), once: not compounding
        noise = torch.randn((self.num_copies, *embeddings.shape), generator=self._rng(embeddings.device),
                            device=embeddings.device, dtype=embeddings.dtype)  # (M, B, D)
        return (embeddings + self.lam**0.5 * scale * noise).flatten(0, 1)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=embeddings.device)
        if not self.statistics.ready:
            pairs = None if self.miner is None else self.miner(embeddings, labels)
            return self.loss(embeddings, labels, pairs)
        refs = torch.cat([embeddings, self.synthesize(embeddings, labels)])  # (B (1+M), D)
        ref_labels = labels.repeat(self.num_copies + 1)
        if self.miner is None:
            pairs = iaa_pairs(labels, self.num_copies)
        else:
            pairs = self._mined(embeddings, labels, refs, ref_labels)
        return self.loss(embeddings, labels, pairs, refs, ref_labels)

    def _mined(self, embeddings: torch.Tensor, labels: torch.Tensor, refs: torch.Tensor,
               ref_labels: torch.Tensor) -> Indices:
        """The miner's pairs (or triplets) among those of :func:`iaa_pairs`."""
        positive, negative = _pair_masks(labels, self.num_copies)  # (B, B(1+M)) each
        with _closest_at(self.miner, _own(labels, self.num_copies)):
            mined = self.miner(embeddings, labels, refs, ref_labels)
        if len(mined) == 3:  # triplets (a, p, n)
            a, p, n = mined
            keep = positive[a, p] & negative[a, n]
            return a[keep], p[keep], n[keep]
        a1, p, a2, n = mined
        keep_positive, keep_negative = positive[a1, p], negative[a2, n]
        return a1[keep_positive], p[keep_positive], a2[keep_negative], n[keep_negative]

    def _rng(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device).manual_seed(self.seed)
        return self._generator


class _ClosestAt(torch.nn.Module):
    """A distance whose entries at ``mask`` are the closest possible value (+inf similarity, -inf distance)."""

    def __init__(self, distance: torch.nn.Module, mask: torch.Tensor) -> None:
        super().__init__()
        self.distance, self.mask, self.is_inverted = distance, mask, distance.is_inverted

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(x, y).masked_fill(self.mask, float("inf") if self.is_inverted else float("-inf"))


@contextmanager
def _closest_at(miner: BaseMiner, mask: torch.Tensor) -> Iterator[None]:
    """The miner measures with :class:`_ClosestAt` inside the block."""
    distance = miner.distance
    miner.distance = _ClosestAt(distance, mask)
    try:
        yield
    finally:
        miner.distance = distance
