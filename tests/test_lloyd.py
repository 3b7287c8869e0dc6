"""Lloyd's k-means with incremental exact assignments (weakdml.evaluation.lloyd) against a plain Lloyd loop and
scikit-learn, and kmeans()'s choice of backend."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from weakdml.evaluation import clustering
from weakdml.evaluation.clustering import clustering_accuracy, kmeans
from weakdml.evaluation.lloyd import lloyd, lloyd_kmeans


def plain_lloyd(x, centroids, max_iter=300):
    """Lloyd's algorithm, every distance recomputed each iteration; an empty cluster takes the point farthest from its
    centroid (farthest first, empty clusters in order), which leaves its old cluster."""
    x, c = x.double(), centroids.double().clone()
    assign = torch.cdist(x, c).argmin(1)
    for iteration in range(1, max_iter + 1):
        far = ((x - c[assign]) ** 2).sum(1).argsort(descending=True).tolist()
        members = [list((assign == j).nonzero()[:, 0].tolist()) for j in range(len(c))]
        for j in range(len(c)):
            if not members[j]:
                p = far.pop(0)
                members[int(assign[p])].remove(p)
                members[j] = [p]
        new = torch.stack([x[m].mean(0) for m in members])
        if torch.equal(new, c):
            return assign, c, iteration
        c, previous = new, assign
        assign = torch.cdist(x, c).argmin(1)
        if torch.equal(assign, previous):
            return assign, c, iteration
    return assign, c, max_iter


def overlapping(n=900, k=30, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, dim, generator=g)[torch.randint(k, (n,), generator=g)] + torch.randn(n, dim, generator=g)


@pytest.mark.parametrize("k", [12, 45])
def test_lloyd_matches_a_plain_loop(k):
    x = overlapping(seed=k) / 8  # magnitudes below 1, as kmeans() passes them
    start = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:k]].clone()
    assign, centroids, iterations = lloyd(x, start)
    expected, expected_centroids, expected_iterations = plain_lloyd(x, start)
    assert iterations == expected_iterations > 5  # several rounds of moved-centroid updates
    assert torch.equal(assign, expected)
    torch.testing.assert_close(centroids.double(), expected_centroids, rtol=0, atol=1e-6)


def test_lloyd_matches_sklearn_from_the_same_centroids():
    x = overlapping(n=1500, k=20, seed=3) / 8
    start = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(2))[:20]].clone()
    km = KMeans(20, init=start.double().numpy(), n_init=1, tol=0, max_iter=300, algorithm="lloyd")
    km.fit(x.double().numpy())
    assign, centroids, _ = lloyd(x, start)
    assert (assign.numpy() == km.labels_).all()
    np.testing.assert_allclose(centroids.numpy(), km.cluster_centers_, atol=1e-6)


def test_an_empty_cluster_takes_the_farthest_point():
    x = overlapping(n=300, k=5, seed=4) / 8
    start = torch.cat([x[:5], torch.full((2, x.shape[1]), 0.9)])  # two centroids far from every point
    assign, centroids, _ = lloyd(x, start)
    expected, expected_centroids, _ = plain_lloyd(x, start)
    assert torch.equal(assign, expected) and torch.bincount(assign, minlength=7).min() > 0
    torch.testing.assert_close(centroids.double(), expected_centroids, rtol=0, atol=1e-6)


def test_lloyd_stops_at_max_iter():
    x = overlapping(seed=5) / 8
    start = x[:30].clone()
    assert lloyd(x, start, max_iter=2)[2] == 2
    assert lloyd(x, start)[2] > 2


def test_kmeans_uses_lloyd_above_many_clusters(monkeypatch):
    g = torch.Generator().manual_seed(6)
    y = torch.arange(600) % 40
    x = torch.randn(40, 16, generator=g)[y] * 10 + torch.randn(600, 16, generator=g)
    assert clustering_accuracy(y, kmeans(x, 40, seed=0, backend="lloyd"))[0] > 0.8
    monkeypatch.setattr(clustering, "MANY_CLUSTERS", 39)
    scale = 2.0 ** np.frexp(float(x.abs().max()))[1]
    assert (kmeans(x, 40, seed=3) == lloyd_kmeans(x / scale, 40, seed=3).numpy()).all()
    best = kmeans(x, 40, seed=3, n_init=4)
    inertias = [clustering.inertia(x, lloyd_kmeans(x / scale, 40, seed=3 + run)) for run in range(4)]
    assert clustering.inertia(x, torch.as_tensor(best)) == pytest.approx(min(inertias))
    with pytest.raises(Exception, match="unknown k-means backend"):
        kmeans(x, 4, backend="nope")
