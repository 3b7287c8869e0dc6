"""Exact k-nearest-neighbour search by squared Euclidean distance, chunked so memory stays bounded.

The default backend is plain torch matrix products on the inputs' device (CPU or CUDA); it is exact and, for the
sizes of this project, as fast as flat faiss. ``backend="faiss"`` uses ``faiss.IndexFlatL2`` for very large sets,
``faiss-ivf`` and ``faiss-hnsw`` faiss's approximate indexes (``faiss_index.py``).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from weakdml.errors import UserError
from weakdml.evaluation.faiss_index import FaissIndex
from weakdml.evaluation.symmetric_knn import fits, symmetric_search
from weakdml.precision import full_precision

ArrayLike = torch.Tensor | np.ndarray
Backend = Literal["torch", "faiss", "faiss-ivf", "faiss-hnsw"]
BACKENDS = ("torch", "faiss", "faiss-ivf", "faiss-hnsw")


def as_embeddings(x: ArrayLike, name: str = "embeddings") -> torch.Tensor:
    """A (N, D) floating tensor from a tensor or array, or a UserError saying what is wrong with it."""
    t = _as_tensor(x, name, "numbers")
    if t.ndim != 2:
        raise UserError(f"{name} must be a 2-D array (N, D), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise UserError(f"{name} is empty (shape {tuple(t.shape)})")
    t = t if t.is_floating_point() else t.float()
    if not torch.isfinite(t).all():
        raise UserError(f"{name} holds NaN or infinite values in {int((~torch.isfinite(t)).any(1).sum())} rows")
    return t


def _as_tensor(x: ArrayLike, name: str, expected: str) -> torch.Tensor:
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError):
        dtype = getattr(x, "dtype", type(x).__name__)
        raise UserError(f"{name} must hold {expected}, got {dtype}") from None


def as_labels(x: ArrayLike, n: int | None = None, name: str = "labels") -> torch.Tensor:
    """A (N,) integer tensor from a tensor or array; ``n`` is the expected length (that of the embeddings)."""
    t = _as_tensor(x, name, "integers")
    if t.ndim != 1:
        raise UserError(f"{name} must be a 1-D array (N,), got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex():
        raise UserError(f"{name} must be integers, got dtype {t.dtype}")
    if t.shape[0] == 0:
        raise UserError(f"{name} is empty")
    if n is not None and t.shape[0] != n:
        raise UserError(f"{name} has {t.shape[0]} entries but there are {n} embeddings")
    return t.long()


def as_queries_and_refs(
    queries: ArrayLike, query_labels: ArrayLike, refs: ArrayLike | None, ref_labels: ArrayLike | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Validated (queries, query labels, refs, ref labels, leave_one_out); without refs the queries are the refs."""
    q = as_embeddings(queries, "embeddings")
    ql = as_labels(query_labels, len(q), "labels")
    if (refs is None) != (ref_labels is None):
        raise UserError("give both reference embeddings and reference labels, or neither")
    if refs is None:
        return q, ql, q, ql, True
    r = as_embeddings(refs, "reference embeddings")
    rl = as_labels(ref_labels, len(r), "reference labels")
    if r.shape[1] != q.shape[1]:
        raise UserError(f"embeddings have dimension {q.shape[1]} but reference embeddings have dimension {r.shape[1]}")
    return q, ql, r, rl, False


def knn_search(
    queries: ArrayLike,
    refs: ArrayLike,
    k: int,
    *,
    exclude_self: bool = False,
    chunk_size: int = 4096,
    ref_chunk_size: int = 16384,
    backend: Backend = "torch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest refs of every query: (squared distances (Q, k) float32, indices (Q, k) long), nearest first.
    The search runs on the embeddings rescaled by a power of two, so that the neighbours are right at any scale; a
    distance beyond float32's range is returned as inf (or 0).

    ``exclude_self=True`` says query ``i`` is ref ``i`` (the queries are the refs, or their first rows) and drops that
    index from its own list; exact duplicates at other indices are still found. ``k`` is clipped to the number of refs
    available. Results are on the queries' device.
    """
    q, r = as_embeddings(queries, "queries"), as_embeddings(refs, "refs")
    if q.shape[1] != r.shape[1]:
        raise UserError(f"queries have dimension {q.shape[1]} but refs have dimension {r.shape[1]}")
    if exclude_self and q.shape[0] > r.shape[0]:
        raise UserError("exclude_self=True needs the queries to be the refs (or their first rows)")
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    if chunk_size < 1 or ref_chunk_size < 1:
        raise UserError("chunk sizes must be at least 1")
    k = min(k, r.shape[0] - int(exclude_self))
    if k < 1:
        raise UserError("leave-one-out search needs at least 2 embeddings")
    check_backend(backend)
    scale = common_scale(q, r)
    q, r = q / scale, r / scale  # exact (a power of two); the squared distances stay in range at any scale
    if backend != "torch":
        index = FaissIndex(r, backend)
        d, i = index.search_without_self(q, k, 0) if exclude_self else index.search(q, k)
    else:
        with full_precision(q.device):  # in the inputs' precision even inside training's autocast
            d, i = _torch_search(q, r.to(q.device, q.dtype), k, exclude_self, chunk_size, ref_chunk_size)
    return d * scale**2, i


def search_backend(setting: str) -> Backend:
    """The backend of a run's ``--knn`` setting: exact (torch), faiss-ivf or faiss-hnsw."""
    return "torch" if setting == "exact" else setting  # type: ignore[return-value]


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UserError(f"unknown kNN backend {backend!r}: use one of {', '.join(BACKENDS)}")


def common_scale(*tensors: torch.Tensor) -> float:
    """A power of two near the largest magnitude in ``tensors`` (1 if all are zero). Dividing by it is exact, and
    brings embeddings of any scale to magnitudes below 1, where squared distances neither overflow (embeddings of
    1e25 in float32) nor underflow (1e-25)."""
    largest = max(float(t.abs().max()) for t in tensors)
    return math.ldexp(1.0, math.frexp(largest)[1]) if largest > 0 else 1.0


def _torch_search(
    q: torch.Tensor, r: torch.Tensor, k: int, exclude_self: bool, chunk_size: int, ref_chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks of (chunk_size, ref_chunk_size) distances, keeping a running top-k per query chunk. A block holds
    |r|² - 2 q·r from one fused product; |q|², the same along a row, is added to the k kept only. A set searched
    against itself, leaving itself out, computes each distance once (``symmetric_knn``) in blocks of the same size."""
    rows = max(1, min(chunk_size, chunk_size * ref_chunk_size // r.shape[0]))
    if exclude_self and q.shape == r.shape and fits(k, rows) and torch.equal(q, r):
        found = list(symmetric_search(q, k, rows))
        return torch.cat([d for _, d, _ in found]).float(), torch.cat([i for _, _, i in found])
    r_sq = (r * r).sum(1)  # (R,)
    out_d, out_i = [], []
    for qs in range(0, q.shape[0], chunk_size):
        qc = q[qs : qs + chunk_size]  # (C, D)
        best_d = best_i = None
        for rs in range(0, r.shape[0], ref_chunk_size):
            rc = r[rs : rs + ref_chunk_size]  # (B, D)
            d = torch.addmm(r_sq[rs : rs + rc.shape[0]], qc, rc.T, alpha=-2.0)  # (C, B)
            if exclude_self:  # rows i and columns i that are the same point: the global diagonal inside this block
                lo, hi = max(qs, rs), min(qs + qc.shape[0], rs + rc.shape[0])
                if lo < hi:
                    diag = torch.arange(lo, hi, device=d.device)
                    d[diag - qs, diag - rs] = float("inf")
            kb = min(k, d.shape[1])
            d, i = torch.topk(d, kb, dim=1, largest=False, sorted=False)  # (C, kb)
            i += rs
            if best_d is not None:  # merge with the best so far
                d, j = torch.topk(torch.cat([best_d, d], 1), min(k, best_d.shape[1] + kb), dim=1, largest=False,
                                  sorted=False)
                i = torch.cat([best_i, i], 1).gather(1, j)
            best_d, best_i = d, i
        d, order = (best_d + (qc * qc).sum(1, keepdim=True)).clamp_min_(0).sort(dim=1, stable=True)  # nearest first
        out_d.append(d)
        out_i.append(best_i.gather(1, order))
    return torch.cat(out_d).float(), torch.cat(out_i).long()
