"""The weighted-kNN monitor of self-supervised features (Wu et al. 2018, InstDisc; used by MoCo): each query votes
with its k most cosine-similar bank entries, weighted exp(similarity / T)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weakdml.evaluation.knn import as_embeddings, as_labels


@torch.no_grad()
def weighted_knn_scores(features: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, k: int = 200,
                        temperature: float = 0.1, num_classes: int | None = None, chunk_size: int = 1024
                        ) -> torch.Tensor:
    """Class scores (Q, classes) of ``features`` (Q, D) from the labelled ``bank`` (N, D), ``bank_labels`` (N,):
    Σ exp(cos / T) over the k nearest bank entries of each class (k clipped to N). Features and bank are
    L2-normalised here; queries go in chunks of ``chunk_size`` so the similarity matrix stays small."""
    q = F.normalize(as_embeddings(features, "features"), dim=1)
    b = F.normalize(as_embeddings(bank, "bank").to(q.device, q.dtype), dim=1)
    labels = as_labels(bank_labels, len(b), "bank labels").to(q.device)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    k = min(k, len(b))
    out = []
    for chunk in q.split(chunk_size):
        similarity, index = (chunk @ b.T).topk(k, dim=1)  # (C, k)
        weights = (similarity / temperature).exp()
        scores = torch.zeros(len(chunk), num_classes, device=q.device, dtype=q.dtype)
        out.append(scores.scatter_add_(1, labels[index], weights))  # (C, classes)
    return torch.cat(out) if out else torch.zeros(0, num_classes, device=q.device, dtype=q.dtype)


def weighted_knn_predict(features: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, k: int = 200,
                         temperature: float = 0.1, num_classes: int | None = None, chunk_size: int = 1024
                         ) -> torch.Tensor:
    """Predicted classes (Q,): the argmax of ``weighted_knn_scores``."""
    return weighted_knn_scores(features, bank, bank_labels, k, temperature, num_classes, chunk_size).argmax(1)
