"""Embeddings -> metrics: exact kNN search, kNN accuracy, Recall@K, P@1, R-Precision, MAP@R, NMI, ARI, clustering
accuracy. Usable without training: inputs are torch tensors or numpy arrays of embeddings (N, D) and integer labels.
"""

from weakdml.evaluation.classification import accuracy, knn_vote, knn_vote_accuracy
from weakdml.evaluation.clustering import ari, clustering_accuracy, kmeans, nmi
from weakdml.evaluation.knn import knn_search
from weakdml.evaluation.report import evaluate_embeddings, format_metrics
from weakdml.evaluation.retrieval import (
    count_relevant,
    map_at_r,
    precision_at_1,
    r_precision,
    recall_at_k,
    retrieval_metrics,
    retrieval_metrics_from_neighbours,
)

__all__ = [
    "accuracy",
    "ari",
    "clustering_accuracy",
    "count_relevant",
    "evaluate_embeddings",
    "format_metrics",
    "kmeans",
    "knn_search",
    "knn_vote",
    "knn_vote_accuracy",
    "map_at_r",
    "nmi",
    "precision_at_1",
    "r_precision",
    "recall_at_k",
    "retrieval_metrics",
    "retrieval_metrics_from_neighbours",
]
