"""Classification from embeddings: majority vote among the k nearest labelled neighbours, and plain accuracy."""

from __future__ import annotations

import torch

from weakdml.errors import UserError
from weakdml.evaluation.knn import ArrayLike, Backend, as_queries_and_refs, knn_search


def accuracy(pred: ArrayLike, labels: ArrayLike) -> float:
    """The fraction of predictions equal to the labels."""
    p, y = torch.as_tensor(pred), torch.as_tensor(labels)
    if p.shape != y.shape or p.numel() == 0:
        raise UserError(f"predictions {tuple(p.shape)} and labels {tuple(y.shape)} must have the same non-empty shape")
    return (p == y.to(p.device)).double().mean().item()


def knn_vote(neighbour_labels: ArrayLike) -> torch.Tensor:
    """The most frequent label in each row (Q, K) -> (Q,); among tied labels, the one that appears nearest wins."""
    n = torch.as_tensor(neighbour_labels)
    classes, inv = torch.unique(n, return_inverse=True)  # inv: (Q, K) compact class ids
    q, k = n.shape
    counts = torch.zeros(q, len(classes), dtype=torch.long, device=n.device).scatter_add_(1, inv, torch.ones_like(inv))
    ranks = torch.arange(k, device=n.device).expand(q, k)
    first = torch.full((q, len(classes)), k, dtype=torch.long, device=n.device)
    first.scatter_reduce_(1, inv, ranks, reduce="amin")  # (Q, C) rank of each label's first appearance
    score = counts * (k + 1) + (k - first)  # count first, then earliest appearance
    return classes[score.argmax(1)]


def knn_vote_accuracy(
    queries: ArrayLike,
    query_labels: ArrayLike,
    refs: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None,
    *,
    k: int = 5,
    backend: Backend = "torch",
    chunk_size: int = 4096,
) -> tuple[float, torch.Tensor]:
    """kNN accuracy of queries classified by refs (leave-one-out within queries if no refs), and predictions (Q,)."""
    q, ql, r, rl, loo = as_queries_and_refs(queries, query_labels, refs, ref_labels)
    _, idx = knn_search(q, r, k, exclude_self=loo, backend=backend, chunk_size=chunk_size)
    pred = knn_vote(rl.to(idx.device)[idx])
    return accuracy(pred, ql), pred
