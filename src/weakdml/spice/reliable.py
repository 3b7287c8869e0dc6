"""SPICE's reliable samples: images whose cluster is confirmed by their neighbourhood in the embedding and by their
own confidence; the labelled set of SPICE-Semi.

An image is reliable when at least ``ratio`` of its k nearest neighbours (itself excluded) are predicted in its
cluster and its highest probability exceeds ``score_threshold``; the clusters are then balanced to the smallest.
A cluster of n ≤ k images counts its images' n − 1 nearest neighbours instead (more cannot be in it): with a fixed k
such a cluster could never pass, which on small data sets (the original's k 100 against clusters of about 150
digits) leaves a cluster with a single relaxed image and balancing cuts every cluster to it.
The original returns an empty set as soon as one cluster has no reliable image (its users' most reported failure).
Here such a cluster lowers its two thresholds step by step, linearly towards ``min_ratio`` and ``min_score``, until
it has ``min_per_cluster`` images; each cluster's thresholds and steps are returned for the caller to report, and a
cluster still empty at the floor raises a UserError that names it and says what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weakdml.errors import UserError
from weakdml.evaluation.knn import Backend, knn_search


@dataclass(frozen=True)
class ClusterReliability:
    """What happened in one cluster: images predicted in it, reliable ones, kept after balancing, the thresholds
    that selected them and how many relaxation steps that took (0: the thresholds asked for)."""

    cluster: int
    predicted: int
    reliable: int
    kept: int
    ratio: float
    score_threshold: float
    relaxations: int


@dataclass(frozen=True)
class ReliableSamples:
    """The selected images ``indices`` (R,) with their clusters ``labels`` (R,), cluster by cluster."""

    indices: torch.Tensor
    labels: torch.Tensor
    clusters: list[ClusterReliability]


def neighbour_agreement(features: torch.Tensor, predicted: torch.Tensor, k: int = 100,
                        backend: Backend = "torch") -> torch.Tensor:
    """Share (N,) of each image's k nearest neighbours (Euclidean on the embedding, itself excluded; cosine order
    for L2-normalised features) predicted in its own cluster; an image of a cluster of n ≤ k images counts its
    max(1, n − 1) nearest."""
    _, neighbours = knn_search(features, features, k, exclude_self=True, backend=backend)  # (N, k), nearest first
    neighbours = neighbours.to(predicted.device)
    counted = (torch.bincount(predicted)[predicted] - 1).clamp(1, neighbours.shape[1])  # (N,)
    same = (predicted[neighbours] == predicted[:, None]).float().cumsum(1)  # (N, k): how many of the j nearest
    return same.gather(1, counted[:, None] - 1)[:, 0] / counted


def reliable_samples(features: torch.Tensor, probabilities: torch.Tensor, generator: torch.Generator, k: int = 100,
                     ratio: float = 0.9, score_threshold: float = 0.99, *, balance: bool = True,
                     min_per_cluster: int = 1, relax_steps: int = 5, min_ratio: float = 0.5, min_score: float = 0.5,
                     backend: Backend = "torch") -> ReliableSamples:
    """The reliable images of a clustering: ``features`` (N, D) the embedding, ``probabilities`` (N, C) the chosen
    head's; ``generator`` draws the balancing subsets. ``relax_steps`` 0 turns relaxation off (an empty cluster
    raises at once)."""
    n, c = probabilities.shape
    if features.shape[0] != n:
        raise UserError(f"{n} images have probabilities but {features.shape[0]} have features")
    confidence, predicted = probabilities.max(1)
    agreement = neighbour_agreement(features, predicted, k, backend).to(probabilities.device)
    chosen, report = [], []
    for cluster in range(c):
        members = predicted == cluster
        for step in range(relax_steps + 1):
            t = step / relax_steps if relax_steps else 0.0
            r, s = ratio + (min_ratio - ratio) * t, score_threshold + (min_score - score_threshold) * t
            selected = (members & (agreement >= r) & (confidence > s)).nonzero()[:, 0]
            if len(selected) >= min_per_cluster:
                break
        if len(selected) == 0:
            raise _empty_cluster(cluster, int(members.sum()), agreement[members], confidence[members], k, r, s)
        chosen.append(selected)
        report.append((cluster, int(members.sum()), len(selected), r, s, step))
    if balance:
        kept = min(len(selected) for selected in chosen)
        chosen = [selected[torch.randperm(len(selected), generator=generator)[:kept].to(selected.device)].sort().values
                  for selected in chosen]
    clusters = [ClusterReliability(cluster, members, reliable, len(selected), r, s, step)
                for (cluster, members, reliable, r, s, step), selected in zip(report, chosen)]
    labels = torch.cat([torch.full((len(selected),), cluster, dtype=torch.long, device=selected.device)
                        for cluster, selected in enumerate(chosen)])
    return ReliableSamples(torch.cat(chosen), labels, clusters)


def _empty_cluster(cluster: int, predicted: int, agreement: torch.Tensor, confidence: torch.Tensor, k: int,
                   ratio: float, score: float) -> UserError:
    if predicted == 0:
        return UserError(f"no image is predicted in cluster {cluster}, so it has no reliable samples: train "
                         "SPICE-Self longer, pick another head or ask for fewer clusters")
    return UserError(
        f"cluster {cluster} has no reliable sample at neighbour ratio {ratio:.2f} and score {score:.2f}: of its "
        f"{predicted} images the most consistent has {agreement.max():.2f} of its {k} neighbours in the cluster and "
        f"the most confident a score of {confidence.max():.2f}; lower the minimum ratio or score below those, or "
        "ask for fewer clusters")
