"""Evaluation protocols. A task says which metrics each epoch records (on the validation and test parts), which
final metrics a run reports, which one tables show (``primary_metric``) and what ``best.pt`` follows by default.

- classification: the method's classifier on validation and test images of the training classes; finally also
  kNN, Recall@K and MAP@R of the test embeddings against the labelled training images.
- retrieval: test classes are not training classes; the test set is searched leave-one-out (or queries against a
  gallery); validation is Recall@1 leave-one-out among the validation images (held-out classes or images).
- clustering: no label trains anything; where the test images have labels they only score the method's cluster
  assignments (Hungarian accuracy, NMI, ARI).

With several processes every one embeds its share of the images and gets all the embeddings; rank 0 alone computes
the metrics from them (searches, k-means, matchings) and sends them to the others.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from weakdml.data.prepare import PreparedData
from weakdml.data.sources import ImageSource
from weakdml.engine import dist
from weakdml.evaluation.clustering import ari, clustering_accuracy, nmi
from weakdml.evaluation.knn import Backend, knn_search, search_backend
from weakdml.evaluation.report import evaluate_embeddings
from weakdml.evaluation.retrieval import count_relevant
from weakdml.methods.base import Method


class Task:
    name = ""
    primary_metric = ""
    default_monitor = ""

    def epoch_metrics(self, method: Method, data: PreparedData) -> dict[str, float]:
        raise NotImplementedError

    def final_metrics(self, method: Method, data: PreparedData) -> dict[str, Any]:
        raise NotImplementedError


def _scored(method: Method, source: ImageSource, score) -> torch.Tensor:
    emb = method.embed_all(source)
    bs = method.cfg.train.eval_batch_size
    return torch.cat([score(emb[i:i + bs]) for i in range(0, len(emb), bs)]) if len(emb) else emb[:, :0]


def classifier_metrics(method: Method, parts: dict[str, ImageSource]) -> dict[str, float]:
    """``<part>_accuracy`` and ``<part>_loss`` (mean NLL) of the method's classifier on each labelled part; the
    scorer is built once for all parts (NaN for an empty part; nothing for a method without a classifier, e.g. MoCo
    with no labelled image for its kNN monitor)."""
    score = method.scorer()
    if score is None:
        return {}
    out = {}
    for name, part in parts.items():
        if len(part) == 0:
            out |= {f"{name}_accuracy": math.nan, f"{name}_loss": math.nan}
            continue
        scores, labels = _scored(method, part, score), part.labels.to(method.device)
        out[f"{name}_accuracy"] = (scores.argmax(1) == labels).float().mean().item()
        out[f"{name}_loss"] = F.cross_entropy(scores, labels).item()
    return out


class Classification(Task):
    name, primary_metric, default_monitor = "classification", "test_accuracy", "val_accuracy"

    def epoch_metrics(self, method: Method, data: PreparedData) -> dict[str, float]:
        metrics = classifier_metrics(method, {"val": data.val, "test": data.test})
        metrics.pop("test_loss", None)
        return metrics

    def final_metrics(self, method: Method, data: PreparedData) -> dict[str, Any]:
        metrics = classifier_metrics(method, {"test": data.test, "val": data.val})
        metrics.pop("val_loss", None)
        ref = data.train.labeled
        if len(ref) and len(data.test):
            queries, references = method.embed_all(data.test).cpu(), method.embed_all(ref).cpu()
            embedding = dist.computed_once(lambda: evaluate_embeddings(
                queries, data.test.labels, references, ref.labels, seed=method.cfg.train.seed,
                backend=search_backend(method.cfg.train.knn)))
            metrics |= {f"test_{k}": v for k, v in embedding.items()}
        return metrics


def recall_at_1(embeddings: torch.Tensor, labels: torch.Tensor, gallery: torch.Tensor | None = None,
                backend: Backend = "torch") -> float:
    """Recall@1 leave-one-out (or queries ~gallery against the gallery); queries without a relevant item are left
    out, NaN when none is left."""
    if gallery is None:
        queries, q_labels, refs, r_labels, loo = embeddings, labels, embeddings, labels, True
    else:
        gallery = gallery.to(embeddings.device)
        queries, q_labels = embeddings[~gallery], labels[~gallery.cpu()]
        refs, r_labels, loo = embeddings[gallery], labels[gallery.cpu()], False
    keep = count_relevant(q_labels, r_labels, exclude_self=loo) > 0
    if len(refs) < 1 + loo or not keep.any():
        return math.nan
    _, idx = knn_search(queries.float(), refs.float(), 1, exclude_self=loo, backend=backend)
    hits = r_labels.to(idx.device)[idx[:, 0]] == q_labels.to(idx.device)
    return hits[keep.to(idx.device)].float().mean().item()


class Retrieval(Task):
    name, primary_metric, default_monitor = "retrieval", "test_recall@1", "val_recall@1"

    def epoch_metrics(self, method: Method, data: PreparedData) -> dict[str, float]:
        backend = search_backend(method.cfg.train.knn)
        val, test = method.embed_all(data.val), method.embed_all(data.test)
        return dist.computed_once(lambda: {
            "val_recall@1": recall_at_1(val, data.val.labels, backend=backend),
            "test_recall@1": recall_at_1(test, data.test.labels, data.bundle.gallery, backend)})

    def final_metrics(self, method: Method, data: PreparedData) -> dict[str, Any]:
        emb, labels, gallery = method.embed_all(data.test).cpu(), data.test.labels, data.bundle.gallery
        val = method.embed_all(data.val)
        settings = {"recall_ks": data.bundle.recall_ks, "seed": method.cfg.train.seed,
                    "backend": search_backend(method.cfg.train.knn)}

        def metrics() -> dict[str, Any]:
            if gallery is None:
                test = evaluate_embeddings(emb, labels, **settings)
            else:
                test = evaluate_embeddings(emb[~gallery], labels[~gallery], emb[gallery], labels[gallery], **settings)
            return {f"test_{k}": v for k, v in test.items()} | {
                "val_recall@1": recall_at_1(val, data.val.labels, backend=settings["backend"])}
        return dist.computed_once(metrics)


class Clustering(Task):
    name, primary_metric, default_monitor = "clustering", "test_cluster_accuracy", "train_loss:min"

    def _scores(self, method: Method, source: ImageSource) -> dict[str, float]:
        score = method.scorer()
        if score is None or len(source) == 0 or (source.labels < 0).all():
            return {}
        clusters = _scored(method, source, score).argmax(1).cpu().numpy()
        y = source.labels.numpy()
        return dist.computed_once(lambda: {"test_cluster_accuracy": clustering_accuracy(y, clusters)[0],
                                           "test_nmi": nmi(y, clusters), "test_ari": ari(y, clusters)})

    def epoch_metrics(self, method: Method, data: PreparedData) -> dict[str, float]:
        return self._scores(method, data.test)

    def final_metrics(self, method: Method, data: PreparedData) -> dict[str, Any]:
        return self._scores(method, data.test)


TASKS: dict[str, Task] = {task.name: task for task in (Classification(), Retrieval(), Clustering())}
