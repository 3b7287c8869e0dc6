"""Clustering metrics (NMI, ARI, Hungarian-matched accuracy) and k-means on embeddings."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.sparse import coo_array, csr_array
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from weakdml.errors import UserError
from weakdml.evaluation.knn import ArrayLike, as_embeddings, common_scale
from weakdml.evaluation.lloyd import lloyd_kmeans


def _pair(labels: ArrayLike, clusters: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length non-empty 1-D numpy arrays."""
    y, c = (torch.as_tensor(x).detach().cpu().numpy() for x in (labels, clusters))
    if y.ndim != 1 or y.shape != c.shape or len(y) == 0:
        raise UserError(f"labels {y.shape} and cluster assignments {c.shape} must be 1-D, non-empty, of equal length")
    return y, c


def nmi(labels: ArrayLike, clusters: ArrayLike) -> float:
    """Normalized mutual information (arithmetic normalization, scikit-learn's default)."""
    return float(normalized_mutual_info_score(*_pair(labels, clusters)))


def ari(labels: ArrayLike, clusters: ArrayLike) -> float:
    """Adjusted Rand index."""
    return float(adjusted_rand_score(*_pair(labels, clusters)))


def clustering_accuracy(labels: ArrayLike, clusters: ArrayLike) -> tuple[float, dict[int, int]]:
    """Accuracy under the best one-to-one cluster -> class mapping (Hungarian), and that mapping: each matched
    cluster's class, which some of its samples have (a cluster sharing no sample with a free class stays unmatched).

    The numbers of clusters and classes may differ: clusters left without a class (or classes without a cluster)
    count all their samples as errors. The matching is solved on the sparse contingency table (its non-zero cells,
    at most one per sample), so 11,000 clusters of 11,000 classes take a fraction of a second and no dense table.
    """
    y, c = _pair(labels, clusters)
    classes, yi = np.unique(y, return_inverse=True)
    cluster_ids, ci = np.unique(c, return_inverse=True)
    table = coo_array((np.ones(len(y), np.int64), (ci.ravel(), yi.ravel())), shape=(len(cluster_ids), len(classes)))
    table = table.tocsr()  # duplicates summed: the counts of the non-zero (cluster, class) cells
    cells = table.tocoo()
    rows, cols = _best_matching(cells.row, cells.col, cells.data, len(cluster_ids), len(classes))
    mapping = {cluster_ids[r].item(): classes[k].item() for r, k in zip(rows, cols)}
    return table[rows, cols].sum().item() / len(y), mapping


def _best_matching(rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, n_rows: int, n_cols: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The (row, column) pairs of the one-to-one matching of most total count among the cells given, any row or
    column may stay unmatched. Solved as a full minimum-weight matching of a graph where each row i has a stand-in
    column and each column j a stand-in row, (j's stand-in, i's stand-in) is an edge wherever (i, j) is, so any
    partial matching completes. Every full matching has n_rows + n_cols edges, so weighing a cell big - count and
    every other edge big (all positive: the solver takes zeros for absent edges) leaves the most count cheapest."""
    big = float(counts.max()) + 1
    graph_rows = np.concatenate([rows, np.arange(n_rows), n_rows + cols, n_rows + np.arange(n_cols)])
    graph_cols = np.concatenate([cols, n_cols + np.arange(n_rows), n_cols + rows, np.arange(n_cols)])
    weights = np.full(len(graph_rows), big)
    weights[: len(rows)] -= counts
    size = n_rows + n_cols
    matched_rows, matched_cols = min_weight_full_bipartite_matching(
        csr_array((weights, (graph_rows, graph_cols)), shape=(size, size)))
    real = (matched_rows < n_rows) & (matched_cols < n_cols)
    return matched_rows[real], matched_cols[real]


MANY_CLUSTERS = 1000  # above: one Lloyd run from random seeds (lloyd.py), as k-means++ restarts cost hours


def kmeans(
    embeddings: ArrayLike,
    n_clusters: int,
    seed: int = 0,
    *,
    n_init: int | None = None,
    max_iter: int | None = None,
    backend: Literal["auto", "sklearn", "lloyd", "faiss"] = "auto",
) -> np.ndarray:
    """Cluster ids (N,) int64 from k-means, best of ``n_init`` seeded restarts (by inertia).

    Backends: ``sklearn`` (k-means++ seeds; 10 restarts by default), ``lloyd`` (weakdml's exact Lloyd from distinct
    random rows, fast at many clusters; 1 run by default), ``faiss`` (random seeds; it runs all ``max_iter``
    iterations); ``auto`` is ``sklearn`` up to ``MANY_CLUSTERS`` clusters and ``lloyd`` above. Above
    ``MANY_CLUSTERS`` every backend defaults to one run, and faiss to its own default of 25 iterations; otherwise
    ``max_iter`` is 300 (``sklearn`` and ``lloyd`` stop earlier, when the assignments settle).
    k-means is scale invariant, so the embeddings are rescaled to magnitudes below 1 first.
    """
    x = as_embeddings(embeddings).detach().float()
    x = (x / common_scale(x)).contiguous()  # (N, D) on its device (lloyd runs there); any scale: see common_scale
    if not 1 <= n_clusters <= len(x):
        raise UserError(f"n_clusters must be between 1 and the number of embeddings ({len(x)}), got {n_clusters}")
    if backend == "auto":
        backend = "sklearn" if n_clusters <= MANY_CLUSTERS else "lloyd"
    if backend not in ("sklearn", "lloyd", "faiss"):
        raise UserError(f"unknown k-means backend {backend!r}: use 'auto', 'sklearn', 'lloyd' or 'faiss'")
    many = n_clusters > MANY_CLUSTERS
    n_init = n_init or (1 if backend == "lloyd" or many else 10)
    max_iter = max_iter or (25 if backend == "faiss" and many else 300)
    if backend == "sklearn":
        km = KMeans(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
        return km.fit_predict(x.cpu().numpy()).astype(np.int64)
    if backend == "lloyd":
        runs = [lloyd_kmeans(x, n_clusters, seed + run, max_iter) for run in range(n_init)]
        return min(runs, key=lambda ids: inertia(x, ids)).cpu().numpy()
    try:
        import faiss
    except ImportError as e:
        raise UserError("faiss is not installed: pip install faiss-cpu") from e
    km = faiss.Kmeans(x.shape[1], n_clusters, niter=max_iter, nredo=n_init, seed=seed, verbose=False)
    points = x.cpu().numpy()
    km.train(points)
    _, assign = km.index.search(points, 1)  # (N, 1) nearest centroid
    return assign[:, 0].astype(np.int64)


def inertia(x: torch.Tensor, ids: torch.Tensor) -> float:
    """The sum of squared distances of the rows of ``x`` (N, D) to the means of their clusters ``ids`` (N,)."""
    sums = x.new_zeros(int(ids.max()) + 1, x.shape[1]).index_add_(0, ids, x)
    counts = torch.bincount(ids).clamp_min(1).to(x.dtype)
    return float(((x - (sums / counts[:, None])[ids]) ** 2).sum())
