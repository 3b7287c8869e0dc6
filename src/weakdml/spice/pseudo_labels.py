"""SPICE-Self's prototype pseudo-labels: confident samples define a prototype per cluster, the samples nearest each
prototype are labelled with its cluster."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from weakdml.errors import UserError
from weakdml.precision import in_full_precision


@dataclass(frozen=True)
class PseudoLabels:
    """Per head the pseudo-labelled images, cluster by cluster: ``indices`` and ``labels`` (H, C·M). An image can be
    among the M nearest of two prototypes (it then appears twice, with two labels) or of none, as in the original."""

    indices: torch.Tensor
    labels: torch.Tensor


@in_full_precision  # the similarities rank images: in half precision many would tie
@torch.no_grad()
def prototype_pseudo_labels(scores: torch.Tensor, features: torch.Tensor, center_ratio: float = 0.5,
                            select_ratio: float = 1.0) -> PseudoLabels:
    """Pseudo-labels of a big batch for every head at once.

    ``scores`` (H, N, C): each head's probabilities (of a weak view); ``features`` (N, D): the images' L2-normalised
    embeddings. With n = N // C, for each head and cluster c the k = ⌊center_ratio · select_ratio · n⌋ images of
    highest p_c give the prototype μ_c (their mean feature); the M = ⌊select_ratio · n⌋ images of highest
    similarity f·μ_c are labelled c. (The original's counts; its ratio schedule is constant 1.0 in every released
    configuration.) The ranking by f·μ_c equals the ranking by cosine similarity: ‖μ_c‖ is the same for all images.
    """
    h, n, c = scores.shape
    if features.shape[0] != n:
        raise UserError(f"scores cover {n} images but there are {features.shape[0]} features")
    per_cluster = n // c
    if per_cluster < 1:
        raise UserError(f"a big batch of {n} images cannot be split into {c} clusters: use at least {c} images")
    k = max(1, int(center_ratio * per_cluster * select_ratio))
    m = max(1, int(per_cluster * select_ratio))
    scores, features = scores.float(), features.float()  # bfloat16 under CPU autocast (softmax stays in it there)
    by_cluster = scores.transpose(1, 2).contiguous()  # (H, C, N)
    confident = by_cluster.topk(k, dim=2, sorted=False).indices  # (H, C, k): per head and cluster, the k most confident
    # (H·C, D) means of those features, summed as they are read: neither the (H, C, k, D) gather nor a product with
    # a mostly zero (H, C, N) membership matrix
    prototypes = F.embedding_bag(confident.reshape(h * c, k), features, mode="mean")
    similarity = (prototypes @ features.T).view(h, c, n)  # (H, C, N)
    nearest = similarity.topk(m, dim=2, sorted=False).indices  # (H, C, M), in no particular order
    labels = torch.arange(c, device=scores.device).view(1, c, 1).expand(h, c, m)
    return PseudoLabels(nearest.reshape(h, c * m), labels.reshape(h, c * m))
