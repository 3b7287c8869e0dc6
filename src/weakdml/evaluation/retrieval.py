"""Retrieval metrics from the labels of ranked neighbours: Recall@K, Precision@1, R-Precision, MAP@R.

Definitions follow Musgrave et al., "A Metric Learning Reality Check" (2020), as computed by pytorch-metric-learning's
``AccuracyCalculator``: R is the number of references sharing the query's label (the query itself not counted in
leave-one-out), and queries with R = 0 are left out of every retrieval metric.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from weakdml.blocks import padded_rows
from weakdml.errors import UserError
from weakdml.evaluation.faiss_index import FaissIndex
from weakdml.evaluation.knn import ArrayLike, Backend, as_queries_and_refs, check_backend, common_scale
from weakdml.evaluation.symmetric_knn import fits, symmetric_search
from weakdml.precision import full_precision


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
    """Hits within the first R ranks (Q, K) and R per query (Q,); checks that K covers every R."""
    hit = _hits(query_labels, neighbour_labels)
    r = torch.as_tensor(num_relevant, device=hit.device).long()
    if r.shape != hit.shape[:1] or (r < 1).any():
        raise UserError("num_relevant must hold one count >= 1 per query")
    if r.max() > hit.shape[1]:
        raise UserError(f"R-precision and MAP@R need {int(r.max())} neighbours per query, got {hit.shape[1]}")
    ranks = torch.arange(hit.shape[1], device=hit.device)  # (K,)
    return hit & (ranks.unsqueeze(0) < r.unsqueeze(1)), r


def _r_precision_per_query(hit_in_r: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """(Q,) same-label items among the first R neighbours, over R."""
    return hit_in_r.sum(1).double() / r


def _average_precision_per_query(hit_in_r: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """(Q,) (1/R) * sum over hits at ranks i <= R of the precision at rank i."""
    ranks = torch.arange(1, hit_in_r.shape[1] + 1, device=hit_in_r.device)  # (K,)
    precision = hit_in_r.cumsum(1).double() / ranks  # (Q, K) precision at each rank
    return (precision * hit_in_r).sum(1) / r


def r_precision(query_labels: ArrayLike, neighbour_labels: ArrayLike, num_relevant: ArrayLike) -> float:
    """Mean over queries of (same-label items among the first R neighbours) / R."""
    return _r_precision_per_query(*_relevance(neighbour_labels, query_labels, num_relevant)).mean().item()


def map_at_r(query_labels: ArrayLike, neighbour_labels: ArrayLike, num_relevant: ArrayLike) -> float:
    """Mean Average Precision at R: mean over queries of (1/R) * sum over hits i <= R of precision at rank i."""
    return _average_precision_per_query(*_relevance(neighbour_labels, query_labels, num_relevant)).mean().item()


def count_relevant(query_labels: ArrayLike, ref_labels: ArrayLike, *, exclude_self: bool = False) -> torch.Tensor:
    """R for every query (Q,): how many refs share its label, minus the query itself when it is one of the refs."""
    q = torch.as_tensor(query_labels)
    r = torch.as_tensor(ref_labels).to(q.device)
    values, counts = torch.unique(r, return_counts=True)
    pos = torch.searchsorted(values, q).clamp_max(len(values) - 1)  # (Q,) where q's label would sit
    found = values[pos] == q
    return torch.where(found, counts[pos], 0) - int(exclude_self)


class RetrievalSums:
    """Recall@K, Precision@1, R-Precision and MAP@R summed over query chunks, so that no (Q, R) list is ever whole.

    Queries with R = 0 are left out (NaN if none is left), as in pytorch-metric-learning.
    """

    def __init__(self, ks: Sequence[int]) -> None:
        self.names = [f"recall@{k}" for k in ks] + ["precision@1", "r_precision", "map@r"]
        self.ks, self.sums, self.count = tuple(ks), torch.zeros(len(self.names), dtype=torch.float64), 0

    def add(self, query_labels: ArrayLike, neighbour_labels: ArrayLike, num_relevant: ArrayLike) -> None:
        """One chunk: query labels (C,), ranked neighbour labels (C, K >= max R), R per query (C,)."""
        q, n = torch.as_tensor(query_labels), torch.as_tensor(neighbour_labels)
        r = torch.as_tensor(num_relevant).to(q.device)
        keep = r > 0
        if not keep.any():
            return
        q, n, r = q[keep], n[keep.to(n.device)], r[keep]
        hit = _hits(q, n)
        hit_in_r, r = _relevance(n, q, r)
        per_query = [hit[:, :k].any(1).double() for k in self.ks]
        per_query.append(hit[:, 0].double())
        per_query += [_r_precision_per_query(hit_in_r, r), _average_precision_per_query(hit_in_r, r)]
        self.sums += torch.stack([v.sum() for v in per_query]).cpu()
        self.count += len(q)

    def result(self) -> dict[str, float]:
        means = (self.sums / self.count).tolist() if self.count else [float("nan")] * len(self.names)
        return dict(zip(self.names, means))


def retrieval_metrics_from_neighbours(
    query_labels: ArrayLike, neighbour_labels: ArrayLike, num_relevant: ArrayLike, ks: Sequence[int] = (1, 2, 4, 8)
) -> dict[str, float]:
    """All retrieval metrics from ranked neighbour labels (Q, K >= max R); queries with R = 0 are left out (NaN if
    none is left), as in pytorch-metric-learning."""
    sums = RetrievalSums(ks)
    sums.add(query_labels, neighbour_labels, num_relevant)
    return sums.result()


def ranked_neighbour_labels(
    queries: torch.Tensor,
    refs: torch.Tensor,
    ref_labels: torch.Tensor,
    k: torch.Tensor,
    *,
    exclude_self: bool = False,
    backend: Backend = "torch",
    chunk_size: int = 4096,
    max_block: int = 2**26,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Per chunk of queries: (its rows, the labels of its nearest refs (C, K_c), nearest first), where K_c is the
    largest ``k`` (Q,) of the chunk, clipped to the refs available. ``exclude_self``: query i is ref i.

    The torch backend ranks each chunk against all refs at once (a (C, N) block of at most ``max_block`` squared
    distances less each query's own squared norm, which leaves its order as it is) with one top-k, so a query asking
    for R = 6,000 neighbours costs one partial sort, not a merge per block of refs. Leave-one-out with few neighbours
    (R of a few dozen, as in CUB, Cars or SOP) computes each distance once instead (``symmetric_knn``).
    """
    check_backend(backend)
    refs, n = refs.to(queries.device, queries.dtype), len(refs)
    scale = common_scale(queries, refs) if len(queries) and n else 1.0
    queries, refs = queries / scale, refs / scale  # exact (a power of two): distances in range at any scale
    rows = max(1, min(chunk_size, max_block // n))
    if exclude_self and backend == "torch" and len(queries) == n > 1 and fits(most := min(int(k.max()), n - 1), rows):
        with full_precision(queries.device):  # every (N, most) list is held by the search anyway
            found = list(symmetric_search(queries, most, rows))
        labels = ref_labels.to(queries.device)
        for start, _, idx in found:
            end = start + len(idx)
            yield slice(start, end), labels[idx[:, : min(int(k[start:end].max()), n - 1)]]
        return
    index = FaissIndex(refs, backend) if backend != "torch" else None  # built once for every chunk
    r_sq = (refs * refs).sum(1)  # (N,)
    labels = torch.cat([ref_labels, ref_labels.new_full((1,), -1)])  # index -1 (not found by an approximate search)
    height = min(rows, len(queries))  # the block is reused: its pages fault once
    block = padded_rows(queries.new_empty(height * (n + 16)), height, n) if index is None else None
    for start in range(0, len(queries), rows):
        qc = queries[start : start + rows]  # (C, D)
        kc = min(int(k[start : start + rows].max()), n - int(exclude_self))
        if index is not None:
            idx = (index.search_without_self(qc, kc, start) if exclude_self else index.search(qc, kc))[1]
        else:
            with full_precision(qc.device):  # |r|² - 2 q·r in one fused product: |q|² does not change a row's order
                d = block[: len(qc)].copy_(r_sq.expand(len(qc), -1)).addmm_(qc, refs.T, alpha=-2.0)  # (C, N)
            if exclude_self:
                own = torch.arange(start, start + len(qc), device=d.device)
                d[own - start, own] = float("inf")
            idx = d.topk(kc, dim=1, largest=False, sorted=True).indices  # (C, K_c)
        yield slice(start, start + len(qc)), labels.to(idx.device)[idx]


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

    Each query's neighbours are ranked up to max(R, max ks), so R-Precision and MAP@R are exact; the metrics are
    summed chunk by chunk, so memory stays bounded whatever R is.
    """
    q, ql, r, rl, loo = as_queries_and_refs(queries, query_labels, refs, ref_labels)
    if not ks or min(ks) < 1:
        raise UserError(f"the K values of Recall@K must be positive integers, got {tuple(ks)}")
    num_relevant = count_relevant(ql, rl, exclude_self=loo)  # (Q,)
    sums = RetrievalSums(ks)
    wanted = num_relevant.clamp_min(max(ks))
    for rows, nbr in ranked_neighbour_labels(q, r, rl, wanted, exclude_self=loo, backend=backend,
                                             chunk_size=chunk_size):
        sums.add(ql[rows], nbr, num_relevant[rows])
    return sums.result()
