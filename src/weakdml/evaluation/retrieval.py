"""Retrieval metrics from the labels of ranked neighbours: Recall@K, Precision@1, R-Precision, MAP@R.

Definitions follow Musgrave et al., "A Metric Learning Reality Check" (2020), as computed by pytorch-metric-learning's
``AccuracyCalculator``: R is the number of references sharing the query's label (the query itself not counted in
leave-one-out), and queries with R = 0 are left out of every retrieval metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from weakdml.errors import UserError
from weakdml.evaluation.knn import ArrayLike, Backend, as_queries_and_refs, knn_search


def _hits(query_labels: ArrayLike, neighbour_labels: ArrayLike) -> torch.Tensor:
    """(Q, K) bool: neighbour j of query i has the query's label."""
    q, n = torch.as_tensor(query_labels), torch.as_tensor(neighbour_labels)
    if n.ndim != 2 or q.ndim != 1 or n.shape[0] != q.shape[0]:
        raise UserError(f"neighbour labels (Q, K) {tuple(n.shape)} do not match query labels (Q,) {tuple(q.shape)}")
    return n == q.to(n.device).unsqueeze(1)


def recall_at_k(query_labels: ArrayLike, neighbour_labels: ArrayLike, ks: Sequence[int]) -> dict[int, float]:
    """DML Recall@K for every K in ``ks``: the fraction of queries with at least one same-label item in their top K."""
    hit = _hits(query_labels, neighbour_labels)
    return {k: hit[:, :k].any(1).double().mean().item() for k in ks}


def precision_at_1(query_labels: ArrayLike, neighbour_labels: ArrayLike) -> float:
    """The fraction of queries whose nearest neighbour has their label (equals Recall@1)."""
    return _hits(query_labels, neighbour_labels)[:, 0].double().mean().item()


def _relevance(neighbour_labels: ArrayLike, query_labels: ArrayLike, num_relevant: ArrayLike):
    """Hits, R per query (Q,) and the mask of the first R ranks (Q, K); checks that K covers every R."""
    hit = _hits(query_labels, neighbour_labels)
    r = torch.as_tensor(num_relevant, device=hit.device).long()
    if r.shape != hit.shape[:1] or (r < 1).any():
        raise UserError("num_relevant must hold one count >= 1 per query")
    if r.max() > hit.shape[1]:
        raise UserError(f"R-precision and MAP@R need {int(r.max())} neighbours per query, got {hit.shape[1]}")
    ranks = torch.arange(hit.shape[1], device=hit.device)  # (K,)
    return hit, r, ranks.unsqueeze(0) < r.unsqueeze(1)


def r_precision(query_labels: ArrayLike, neighbour_labels: ArrayLike, num_relevant: ArrayLike) -> float:
    """Mean over queries of (same-label items among the first R neighbours) / R."""
    hit, r, first_r = _relevance(neighbour_labels, query_labels, num_relevant)
    return ((hit & first_r).sum(1).double() / r).mean().item()


def map_at_r(query_labels: ArrayLike, neighbour_labels: ArrayLike, num_relevant: ArrayLike) -> float:
    """Mean Average Precision at R: mean over queries of (1/R) * sum over hits i <= R of precision at rank i."""
    hit, r, first_r = _relevance(neighbour_labels, query_labels, num_relevant)
    hit = hit & first_r
    ranks = torch.arange(1, hit.shape[1] + 1, device=hit.device)  # (K,)
    precision = hit.cumsum(1).double() / ranks  # (Q, K) precision at each rank
    return ((precision * hit).sum(1) / r).mean().item()


def count_relevant(query_labels: ArrayLike, ref_labels: ArrayLike, *, exclude_self: bool = False) -> torch.Tensor:
    """R for every query (Q,): how many refs share its label, minus the query itself when it is one of the refs."""
    q = torch.as_tensor(query_labels)
    r = torch.as_tensor(ref_labels).to(q.device)
    values, counts = torch.unique(r, return_counts=True)
    pos = torch.searchsorted(values, q).clamp_max(len(values) - 1)  # (Q,) where q's label would sit
    found = values[pos] == q
    return torch.where(found, counts[pos], 0) - int(exclude_self)


def retrieval_metrics_from_neighbours(
    query_labels: ArrayLike, neighbour_labels: ArrayLike, num_relevant: ArrayLike, ks: Sequence[int] = (1, 2, 4, 8)
) -> dict[str, float]:
    """All retrieval metrics from ranked neighbour labels (Q, K >= max R); queries with R = 0 are left out (NaN if
    none is left), as in pytorch-metric-learning."""
    q, n = torch.as_tensor(query_labels), torch.as_tensor(neighbour_labels)
    r = torch.as_tensor(num_relevant).to(q.device)
    keep = r > 0
    if not keep.any():
        names = [f"recall@{k}" for k in ks] + ["precision@1", "r_precision", "map@r"]
        return dict.fromkeys(names, float("nan"))
    q, n, r = q[keep], n[keep.to(n.device)], r[keep]
    out = {f"recall@{k}": v for k, v in recall_at_k(q, n, ks).items()}
    out["precision@1"] = precision_at_1(q, n)
    out["r_precision"] = r_precision(q, n, r)
    out["map@r"] = map_at_r(q, n, r)
    return out


def retrieval_metrics(
    queries: ArrayLike,
    query_labels: ArrayLike,
    refs: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None,
    *,
    ks: Sequence[int] = (1, 2, 4, 8),
    backend: Backend = "torch",
    chunk_size: int = 4096,
) -> dict[str, float]:
    """Recall@K, Precision@1, R-Precision and MAP@R of queries against refs (leave-one-out within queries if no refs).

    Searches max(R, max ks) neighbours so that R-Precision and MAP@R are exact.
    """
    q, ql, r, rl, loo = as_queries_and_refs(queries, query_labels, refs, ref_labels)
    num_relevant = count_relevant(ql, rl, exclude_self=loo)
    k = max(int(num_relevant.max()), max(ks))
    _, idx = knn_search(q, r, k, exclude_self=loo, backend=backend, chunk_size=chunk_size)
    return retrieval_metrics_from_neighbours(ql, rl.to(idx.device)[idx], num_relevant, ks)
