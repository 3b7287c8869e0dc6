"""Clustering metrics (NMI, ARI, Hungarian-matched accuracy) and k-means on embeddings."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from weakdml.errors import UserError
from weakdml.evaluation.knn import ArrayLike, as_embeddings, common_scale


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
    """Accuracy under the best one-to-one cluster -> class mapping (Hungarian), and that mapping.

    The cost matrix is rectangular when the numbers of clusters and classes differ: clusters left without a class
    (or classes without a cluster) count all their samples as errors.
    """
    y, c = _pair(labels, clusters)
    classes, yi = np.unique(y, return_inverse=True)
    cluster_ids, ci = np.unique(c, return_inverse=True)
    contingency = np.zeros((len(cluster_ids), len(classes)), dtype=np.int64)  # (clusters, classes)
    np.add.at(contingency, (ci, yi), 1)
    rows, cols = linear_sum_assignment(contingency, maximize=True)
    mapping = {cluster_ids[r].item(): classes[k].item() for r, k in zip(rows, cols)}
    return contingency[rows, cols].sum().item() / len(y), mapping


def kmeans(
    embeddings: ArrayLike,
    n_clusters: int,
    seed: int = 0,
    *,
    n_init: int = 10,
    max_iter: int = 300,
    backend: Literal["sklearn", "faiss"] = "sklearn",
) -> np.ndarray:
    """Cluster ids (N,) int64 from k-means with ``n_init`` seeded restarts (scikit-learn, or faiss for large sets);
    k-means is scale invariant, so the embeddings are rescaled to magnitudes below 1 first."""
    x = as_embeddings(embeddings).detach().cpu()
    x = np.ascontiguousarray((x / common_scale(x)).numpy(), dtype=np.float32)  # (N, D); any scale: see common_scale
    if not 1 <= n_clusters <= len(x):
        raise UserError(f"n_clusters must be between 1 and the number of embeddings ({len(x)}), got {n_clusters}")
    if backend == "sklearn":
        km = KMeans(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
        return km.fit_predict(x).astype(np.int64)
    if backend != "faiss":
        raise UserError(f"unknown k-means backend {backend!r}: use 'sklearn' or 'faiss'")
    try:
        import faiss
    except ImportError as e:
        raise UserError("faiss is not installed: pip install faiss-cpu") from e
    km = faiss.Kmeans(x.shape[1], n_clusters, niter=max_iter, nredo=n_init, seed=seed, verbose=False)
    km.train(x)
    _, assign = km.index.search(x, 1)  # (N, 1) nearest centroid
    return assign[:, 0].astype(np.int64)
