"""All evaluation metrics of a set of embeddings in one call, and a terminal table of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from weakdml.errors import UserError
from weakdml.evaluation.classification import accuracy, knn_vote
from weakdml.evaluation.clustering import ari, clustering_accuracy, kmeans, nmi
from weakdml.evaluation.knn import ArrayLike, Backend, as_queries_and_refs
from weakdml.evaluation.retrieval import RetrievalSums, count_relevant, ranked_neighbour_labels


def evaluate_embeddings(
    embeddings: ArrayLike,
    labels: ArrayLike,
    ref_embeddings: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None,
    *,
    recall_ks: Sequence[int] = (1, 2, 4, 8),
    knn_k: int = 5,
    cluster: bool = True,
    backend: Backend = "torch",
    seed: int = 0,
) -> dict[str, float]:
    """kNN accuracy, Recall@K, Precision@1, R-Precision, MAP@R and (if ``cluster``) NMI, ARI, clustering accuracy.

    With refs, the embeddings are queries searched against the refs; without, each embedding is searched among the
    others (leave-one-out). Clustering is k-means on ``embeddings`` with as many clusters as classes (``kmeans``:
    k-means++ with 10 restarts up to 1,000 classes, one exact Lloyd run from random seeds above). One neighbour
    search, streamed chunk by chunk of queries, serves every kNN metric, so memory stays bounded whatever R is.
    """
    if not recall_ks or min(recall_ks) < 1 or knn_k < 1:
        raise UserError("the K values of Recall@K (--recall-k) and of the kNN vote (--knn-k) must be positive "
                        "integers")
    q, ql, r, rl, loo = as_queries_and_refs(embeddings, labels, ref_embeddings, ref_labels)
    num_relevant = count_relevant(ql, rl, exclude_self=loo)  # (Q,) R per query
    sums, votes = RetrievalSums(recall_ks), []
    wanted = num_relevant.clamp_min(max(knn_k, max(recall_ks)))
    for rows, nbr in ranked_neighbour_labels(q, r, rl, wanted, exclude_self=loo, backend=backend):  # (C, K_c)
        votes.append(knn_vote(nbr[:, :knn_k]))
        sums.add(ql[rows], nbr, num_relevant[rows])
    metrics = {"knn_accuracy": accuracy(torch.cat(votes), ql), **sums.result()}
    if cluster:
        n_classes = int(ql.unique().numel())
        clusters = kmeans(q, n_classes, seed, backend="faiss" if backend.startswith("faiss") else "auto")
        y = ql.cpu().numpy()
        metrics.update(nmi=nmi(y, clusters), ari=ari(y, clusters))
        metrics["clustering_accuracy"] = clustering_accuracy(y, clusters)[0]
    return metrics


def format_metrics(metrics: Mapping[str, float], digits: int = 4) -> str:
    """An aligned two-column table (metric, value) for the terminal."""
    if not metrics:
        return "(no metrics)"
    values = [str(value) if isinstance(value, (int, str)) else f"{value:.{digits}f}" for value in metrics.values()]
    w_name, w_value = max(len("metric"), *map(len, metrics)), max(len("value"), *map(len, values))
    lines = [f"{'metric':<{w_name}}  {'value':>{w_value}}", f"{'-' * w_name}  {'-' * w_value}"]
    lines += [f"{name:<{w_name}}  {value:>{w_value}}" for name, value in zip(metrics, values)]
    return "\n".join(lines)
