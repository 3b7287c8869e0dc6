"""Multi-Similarity loss and miner (Wang et al., CVPR 2019) from pytorch-metric-learning, with the settings of the IAA
paper and its code: thresh (PML's base) 0.5, margin (the miner's epsilon) 0.1, scale_pos (alpha) 2, scale_neg
(beta) 40, cosine similarity."""

from __future__ import annotations

from pytorch_metric_learning.losses import MultiSimilarityLoss
from pytorch_metric_learning.miners import MultiSimilarityMiner


def multi_similarity(thresh: float = 0.5, margin: float = 0.1, scale_pos: float = 2.0,
                     scale_neg: float = 40.0) -> tuple[MultiSimilarityLoss, MultiSimilarityMiner]:
    """The loss and its miner; use them as ``loss(emb, labels, miner(emb, labels))`` or inside :class:`IAALoss`."""
    return MultiSimilarityLoss(alpha=scale_pos, beta=scale_neg, base=thresh), MultiSimilarityMiner(epsilon=margin)
