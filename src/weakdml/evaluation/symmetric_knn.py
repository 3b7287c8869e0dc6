"""Leave-one-out exact k-nearest-neighbour search of a set against itself, each distance computed once.

The distances of a set to itself are symmetric, so the block of a chunk of rows against the rows after it also holds,
transposed, the distances of those later rows to the chunk. Walking the chunks in order, a chunk's block is ranked
along its rows (the chunk's neighbours among the later rows) and filtered along its columns: a later row keeps a
running top-k, seeded from its own chunk, and takes from the block only the distances below its current k-th, which
after the first chunks are few (about k per row over the whole walk, times a logarithm). When the walk reaches a
chunk, its rows have seen every other row. Half the matrix products of a search against all rows (flat faiss and a
plain chunked search compute every distance twice), for a filter of two passes over each block.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from weakdml.blocks import padded_rows

WORTH_IT = 8  # k at most rows / WORTH_IT: a chunk's own rows seed its running top-k with useful thresholds


def fits(k: int, rows: int) -> bool:
    """Whether the symmetric search pays off for ``k`` neighbours with row chunks of ``rows``."""
    return k * WORTH_IT <= rows


def symmetric_search(x: torch.Tensor, k: int, rows: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """The ``k`` (< len(x)) nearest other rows of every row of ``x`` (N, D), by squared Euclidean distance, chunk by
    chunk of ``rows`` rows: (the chunk's first row, squared distances (C, k), indices (C, k)), nearest first. ``x``
    should be scaled to magnitudes below 1 (see ``knn.common_scale``). The blocks are computed in ``x``'s precision.
    """
    n = len(x)
    squared = (x * x).sum(1)  # (N,)
    best_d, best_i = x.new_full((n, k), torch.inf), torch.zeros(n, k, dtype=torch.long, device=x.device)
    starts = range(0, n, rows)
    for start in starts:  # seeds: each row's nearest within its own chunk
        end = min(start + rows, n)
        d = _distances(x, squared, start, end, start, end)
        d.fill_diagonal_(torch.inf)
        kk = min(k, end - start - 1)
        if kk > 0:
            best_d[start:end, :kk], j = d.topk(kk, dim=1, largest=False, sorted=False)
            best_i[start:end, :kk] = j + start
    block = x.new_empty(min(rows, n) * (n - min(rows, n) + 16))  # reused (its pages fault once)
    for start in starts:
        end = min(start + rows, n)
        if end < n:
            d = _distances(x, squared, start, end, end, n, block)  # (C, N - end)
            _merge_dense(best_d[start:end], best_i[start:end], d, end)  # the chunk's rows against the later rows
            _merge_below(best_d[end:], best_i[end:], d, start)  # the later rows against the chunk
        dist, order = best_d[start:end].clamp_min(0).sort(dim=1, stable=True)
        yield start, dist, best_i[start:end].gather(1, order)


def _distances(x: torch.Tensor, squared: torch.Tensor, a: int, b: int, c: int, e: int,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """Squared distances (b - a, e - c) of rows a..b to rows c..e (symmetric in its two sides), in ``out`` if given."""
    shape = (b - a, e - c)
    d = squared[c:e].expand(shape) + squared[a:b, None] if out is None else padded_rows(out, *shape).copy_(
        squared[c:e].expand(shape)).add_(squared[a:b, None])
    return d.addmm_(x[a:b], x[c:e].T, alpha=-2.0)


def _merge_dense(best_d: torch.Tensor, best_i: torch.Tensor, d: torch.Tensor, offset: int) -> None:
    """Keep in ``best_d``/``best_i`` (C, k), in place, their k smallest together with each row of ``d`` (C, M), whose
    columns are rows ``offset``.. of the set."""
    new_d, new_i = d.topk(min(best_d.shape[1], d.shape[1]), dim=1, largest=False, sorted=False)
    _keep_smallest(best_d, best_i, new_d, new_i + offset)


def _merge_below(best_d: torch.Tensor, best_i: torch.Tensor, d: torch.Tensor, offset: int) -> None:
    """The same along the columns of ``d`` (C, M): column j's candidates, rows ``offset``.. of the set, for row j of
    ``best_d`` (M, k); only the distances below its current k-th can enter, so only those are gathered. Where they
    are many (more than k/4 a column on average, or more than k in one: the first chunks, whose thresholds come
    from one chunk), the block's columns are ranked densely instead, so the memory stays of the order of the
    running top-k's."""
    below = d < best_d.amax(1)  # (C, M)
    k = best_d.shape[1]
    if int(torch.count_nonzero(below)) > len(best_d) * k // 4:  # (a per-column count would upcast the whole mask)
        _merge_columns_densely(best_d, best_i, d, offset)
        return
    rows, columns = torch.nonzero(below, as_tuple=True)  # (P,) each, row-major
    if len(columns) == 0:
        return
    columns, order = columns.sort(stable=True)
    rows = rows[order]
    touched, counts = torch.unique_consecutive(columns, return_counts=True)  # (T,) columns with a candidate
    width = int(counts.max())
    if width > k:
        _merge_columns_densely(best_d, best_i, d, offset)
        return
    first = torch.cumsum(counts, 0) - counts  # (T,) each one's first position among the candidates
    slot = torch.arange(len(columns), device=d.device) - first.repeat_interleave(counts)  # (P,) its rank there
    which = torch.repeat_interleave(torch.arange(len(touched), device=d.device), counts)  # (P,) its column's number
    new_d = d.new_full((len(touched), width), torch.inf).index_put_((which, slot), d[rows, columns])
    new_i = torch.zeros(len(touched), width, dtype=torch.long, device=d.device).index_put_((which, slot),
                                                                                           rows + offset)
    sub_d, sub_i = best_d[touched], best_i[touched]
    _keep_smallest(sub_d, sub_i, new_d, new_i)
    best_d[touched], best_i[touched] = sub_d, sub_i


def _merge_columns_densely(best_d: torch.Tensor, best_i: torch.Tensor, d: torch.Tensor, offset: int) -> None:
    new_d, new_i = d.topk(min(best_d.shape[1], d.shape[0]), dim=0, largest=False, sorted=False)  # (k', M)
    _keep_smallest(best_d, best_i, new_d.T, new_i.T + offset)


def _keep_smallest(best_d: torch.Tensor, best_i: torch.Tensor, new_d: torch.Tensor, new_i: torch.Tensor) -> None:
    """Keep in ``best_d``/``best_i`` (M, k), in place, the k smallest of them and the candidates (M, k')."""
    d, j = torch.cat([best_d, new_d], 1).topk(best_d.shape[1], dim=1, largest=False, sorted=False)
    best_i.copy_(torch.cat([best_i, new_i], 1).gather(1, j))
    best_d.copy_(d)
