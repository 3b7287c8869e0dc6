"""Evaluation metrics against references: brute-force torch, pytorch-metric-learning, scikit-learn, plain loops."""

import importlib.util
import itertools

import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.neighbors import KNeighborsClassifier

from weakdml.errors import UserError
from weakdml.evaluation import (
    accuracy,
    ari,
    clustering_accuracy,
    count_relevant,
    evaluate_embeddings,
    format_metrics,
    kmeans,
    knn_search,
    knn_vote,
    knn_vote_accuracy,
    map_at_r,
    nmi,
    precision_at_1,
    r_precision,
    recall_at_k,
    retrieval_metrics,
)

HAS_FAISS = importlib.util.find_spec("faiss") is not None


def blobs(n: int, classes: int, dim: int = 8, spread: float = 1.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters (n, dim) with unbalanced integer labels; ``spread`` sets how far apart the centres are."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centres = spread * torch.randn(classes, dim, generator=g)
    return centres[labels] + torch.randn(n, dim, generator=g), labels


def brute_knn(q: torch.Tensor, r: torch.Tensor, k: int, exclude_self: bool = False):
    d = torch.cdist(q.double(), r.double()) ** 2
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    order = d.argsort(1)[:, :k]
    return d.gather(1, order), order


# ---------------------------------------------------------------- knn_search


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("chunks", [(4096, 16384), (7, 16384), (4096, 11), (5, 3)])
def test_knn_search_matches_brute_force(exclude_self, chunks):
    x, _ = blobs(120, 4, seed=1)
    r = x if exclude_self else blobs(90, 4, seed=2)[0]
    d, i = knn_search(x, r, 6, exclude_self=exclude_self, chunk_size=chunks[0], ref_chunk_size=chunks[1])
    bd, bi = brute_knn(x, r, 6, exclude_self)
    assert d.dtype == torch.float32 and i.dtype == torch.long and d.shape == i.shape == (120, 6)
    assert torch.equal(i, bi)  # continuous data: no ties, so the order is unique
    torch.testing.assert_close(d.double(), bd, rtol=1e-4, atol=1e-4)
    assert (d[:, 1:] >= d[:, :-1]).all()
    if exclude_self:
        assert not (i == torch.arange(120).unsqueeze(1)).any()


def test_knn_search_is_exact_inside_autocast():
    """Training calls the search under mixed precision; a bfloat16 product would reorder close neighbours."""
    x, _ = blobs(300, 64, seed=4)
    r = blobs(2000, 64, seed=5)[0]
    plain = knn_search(x, r, 50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = knn_search(x, r, 50)
    assert torch.equal(plain[1], inside[1]) and torch.equal(plain[0], inside[0])


def test_knn_search_finds_duplicates_but_not_self():
    x, _ = blobs(40, 3, seed=3)
    x = torch.cat([x, x[:10]])  # rows 40..49 duplicate rows 0..9
    d, i = knn_search(x, x, 3, exclude_self=True, chunk_size=8, ref_chunk_size=16)
    twins = torch.cat([torch.arange(40, 50), torch.arange(10)])
    rows = torch.cat([torch.arange(10), torch.arange(40, 50)])
    assert torch.equal(i[rows, 0], twins)
    assert d[:10, 0].abs().max() < 1e-4 and d[40:, 0].abs().max() < 1e-4
    assert not (i == torch.arange(50).unsqueeze(1)).any()


def test_knn_search_clips_k_and_accepts_numpy():
    x, _ = blobs(5, 2, seed=4)
    _, i = knn_search(x.numpy(), x.numpy(), 50, exclude_self=True)
    assert i.shape == (5, 4)
    assert all(set(row.tolist()) == set(range(5)) - {n} for n, row in enumerate(i))
    assert knn_search(x, x[:3], 10)[1].shape == (5, 3)


def test_knn_search_errors():
    x, _ = blobs(5, 2)
    with pytest.raises(UserError, match="dimension"):
        knn_search(x, x[:, :3], 2)
    with pytest.raises(UserError, match="empty"):
        knn_search(x[:0], x, 2)
    with pytest.raises(UserError, match="at least 2"):
        knn_search(x[:1], x[:1], 2, exclude_self=True)
    with pytest.raises(UserError, match="backend"):
        knn_search(x, x, 2, backend="annoy")


@pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")
@pytest.mark.parametrize("exclude_self", [False, True])
def test_knn_search_faiss_matches_torch(exclude_self):
    x, _ = blobs(200, 5, seed=5)
    r = x if exclude_self else blobs(150, 5, seed=6)[0]
    d, i = knn_search(x, r, 7, exclude_self=exclude_self, backend="faiss")
    td, ti = knn_search(x, r, 7, exclude_self=exclude_self)
    assert torch.equal(i, ti)
    torch.testing.assert_close(d, td, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(HAS_FAISS, reason="faiss installed")
def test_knn_search_faiss_missing_is_user_error():
    x, _ = blobs(5, 2)
    with pytest.raises(UserError, match="pip install faiss-cpu"):
        knn_search(x, x, 2, backend="faiss")


# ---------------------------------------------------------------- retrieval vs pytorch-metric-learning

PML_KEYS = {"precision_at_1": "precision@1", "r_precision": "r_precision", "mean_average_precision_at_r": "map@r"}


def pml_metrics(*args) -> dict[str, float]:
    calc = AccuracyCalculator(
        include=tuple(PML_KEYS), k="max_bin_count", knn_func=CustomKNN(LpDistance(normalize_embeddings=False))
    )
    return {PML_KEYS[name]: value for name, value in calc.get_accuracy(*args).items()}


def test_retrieval_matches_pml_leave_one_out():
    x, y = blobs(300, 6, spread=1.0, seed=7)
    ours = retrieval_metrics(x, y)
    ref = pml_metrics(x, y)  # no reference: PML sets ref_includes_query=True
    assert 0.2 < ref["map@r"] < 0.9  # not trivial
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key


def test_retrieval_matches_pml_query_vs_ref():
    x, y = blobs(460, 5, spread=1.0, seed=8)
    q, ql, r, rl = x[:200], y[:200].clone(), x[200:], y[200:]
    ql[:5] = 99  # queries whose label no ref has: left out by both
    ours = retrieval_metrics(q, ql, r, rl)
    ref = pml_metrics(q, ql, r, rl, False)
    assert 0.2 < ref["map@r"] < 0.95
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("chunk_size", [4096, 37])
def test_retrieval_matches_pml_with_large_r(chunk_size):
    x, y = blobs(1500, 3, spread=0.6, seed=21)  # R about 500 per query, streamed in chunks of queries
    ours = retrieval_metrics(x, y, chunk_size=chunk_size)
    ref = pml_metrics(x, y)
    assert 0.2 < ref["map@r"] < 0.9 and count_relevant(y, y, exclude_self=True).min() > 400
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key  # float ties: 1e-6
    q, ql, r, rl = x[:400], y[:400], x[400:], y[400:]
    ours, ref = retrieval_metrics(q, ql, r, rl, chunk_size=chunk_size), pml_metrics(q, ql, r, rl, False)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key  # float ties: 1e-6
    report = evaluate_embeddings(x, y, cluster=False)
    assert all(report[key] == pytest.approx(value, abs=1e-12) for key, value in retrieval_metrics(x, y).items())


@pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")
@pytest.mark.parametrize("with_refs", [False, True])
def test_retrieval_faiss_matches_torch(with_refs):
    x, y = blobs(700, 4, spread=1.0, seed=22)
    args = (x[:300], y[:300], x[300:], y[300:]) if with_refs else (x, y)
    torch_metrics = retrieval_metrics(*args, chunk_size=64)
    faiss_metrics = retrieval_metrics(*args, chunk_size=64, backend="faiss")
    assert all(faiss_metrics[key] == pytest.approx(value, abs=1e-6) for key, value in torch_metrics.items())  # ties


def test_recall_at_k_matches_loop():
    g = torch.Generator().manual_seed(10)
    ql, nbr = torch.randint(0, 4, (50,), generator=g), torch.randint(0, 4, (50, 6), generator=g)
    ours = recall_at_k(ql, nbr, (1, 2, 4, 8))
    for k in (1, 2, 4, 8):
        loop = sum(any(nbr[i, j] == ql[i] for j in range(min(k, 6))) for i in range(50)) / 50
        assert ours[k] == pytest.approx(loop)
    assert precision_at_1(ql, nbr) == pytest.approx(ours[1])


def test_r_precision_and_map_at_r_small_example():
    # query label 0, R = 3, ranked neighbours: hit, miss, hit, hit(beyond R)
    ql, nbr, r = torch.tensor([0]), torch.tensor([[0, 1, 0, 0]]), torch.tensor([3])
    assert r_precision(ql, nbr, r) == pytest.approx(2 / 3)
    assert map_at_r(ql, nbr, r) == pytest.approx((1 / 1 + 2 / 3) / 3)
    with pytest.raises(UserError, match="neighbours"):
        map_at_r(ql, nbr[:, :2], r)


def test_count_relevant():
    assert count_relevant(torch.tensor([0, 1, 5]), torch.tensor([0, 0, 1, 2])).tolist() == [2, 1, 0]
    assert count_relevant(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]), exclude_self=True).tolist() == [1, 1, 0]


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize("with_refs", [False, True])
def test_knn_vote_matches_sklearn(with_refs):
    x, y = blobs(200, 2, spread=0.8, seed=11)  # two classes and odd k: no vote ties
    if with_refs:
        q, ql, r, rl = x[:80], y[:80], x[80:], y[80:]
        acc, pred = knn_vote_accuracy(q, ql, r, rl, k=5)
        sk = KNeighborsClassifier(5).fit(r.numpy(), rl.numpy()).predict(q.numpy())
    else:
        acc, pred = knn_vote_accuracy(x, y, k=5)
        nbr = KNeighborsClassifier(5).fit(x.numpy(), y.numpy()).kneighbors(return_distance=False)  # excludes self
        sk = np.array([np.bincount(y.numpy()[row]).argmax() for row in nbr])
        ql = y
    assert pred.tolist() == sk.tolist()
    assert acc == pytest.approx((sk == ql.numpy()).mean())
    assert 0.5 < acc < 1.0


def test_knn_vote_ties_go_to_the_nearest_label():
    nbr = torch.tensor([[3, 7, 7, 3], [7, 3, 3, 7], [5, 2, 2, 9], [1, 4, 6, 8], [9, 9, 9, 2]])
    assert knn_vote(nbr).tolist() == [3, 7, 2, 1, 9]
    assert accuracy(torch.tensor([1, 2, 3]), np.array([1, 0, 3])) == pytest.approx(2 / 3)


# ---------------------------------------------------------------- clustering


def test_nmi_ari_match_sklearn():
    g = np.random.default_rng(12)
    y, c = g.integers(0, 4, 100), g.integers(0, 5, 100)
    assert nmi(y, c) == pytest.approx(normalized_mutual_info_score(y, c))
    assert ari(torch.from_numpy(y), c) == pytest.approx(adjusted_rand_score(y, c))


def test_clustering_accuracy_permutation_is_perfect():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    acc, mapping = clustering_accuracy(y, np.array([5, 5, 9, 9, 1, 1, 1]))
    assert acc == 1.0 and mapping == {5: 0, 9: 1, 1: 2}


def brute_force_accuracy(y: np.ndarray, c: np.ndarray) -> float:
    """Best one-to-one assignment of clusters to classes by trying every injection of the smaller side."""
    classes, clusters = list(np.unique(y)), list(np.unique(c))
    best = 0
    if len(clusters) <= len(classes):
        for perm in itertools.permutations(classes, len(clusters)):
            best = max(best, sum(int(((c == k) & (y == v)).sum()) for k, v in zip(clusters, perm)))
    else:
        for perm in itertools.permutations(clusters, len(classes)):
            best = max(best, sum(int(((c == k) & (y == v)).sum()) for k, v in zip(perm, classes)))
    return best / len(y)


@pytest.mark.parametrize("n_clusters", [2, 3, 5])  # fewer, as many and more clusters than the 3 classes
def test_clustering_accuracy_matches_brute_force(n_clusters):
    g = np.random.default_rng(13 + n_clusters)
    y = g.integers(0, 3, 30)
    c = np.where(g.random(30) < 0.6, y % n_clusters, g.integers(0, n_clusters, 30))
    acc, mapping = clustering_accuracy(y, c)
    assert acc == pytest.approx(brute_force_accuracy(y, c))
    assert len(mapping) == min(n_clusters, 3) and len(set(mapping.values())) == len(mapping)


@pytest.mark.parametrize("shape", [(40, 40), (25, 60), (60, 25)])  # clusters x classes
def test_clustering_accuracy_matches_dense_hungarian(shape):
    from scipy.optimize import linear_sum_assignment

    g = np.random.default_rng(sum(shape))
    y = g.integers(0, shape[1], 2000)
    c = np.where(g.random(2000) < 0.4, y % shape[0], g.integers(0, shape[0], 2000))
    table = np.zeros(shape, np.int64)
    np.add.at(table, (c, y), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    acc, mapping = clustering_accuracy(y, c)
    assert acc == table[rows, cols].sum() / len(y)
    assert sum(table[k, v] for k, v in mapping.items()) / len(y) == acc and len(set(mapping.values())) == len(mapping)


def test_clustering_accuracy_leaves_a_cluster_without_its_class_unmatched():
    acc, mapping = clustering_accuracy([0, 0, 0, 0, 1], [5, 5, 5, 6, 7])  # cluster 6 holds only class 0, taken by 5
    assert acc == 4 / 5 and mapping == {5: 0, 7: 1}


def test_kmeans_recovers_blobs():
    x, y = blobs(300, 4, spread=10.0, seed=14)
    c = kmeans(x, 4, seed=0)
    assert c.shape == (300,) and clustering_accuracy(y, c)[0] == 1.0
    assert (kmeans(x, 4, seed=0) == c).all()  # seeded
    if HAS_FAISS:
        assert clustering_accuracy(y, kmeans(x, 4, seed=0, backend="faiss"))[0] == 1.0


# ---------------------------------------------------------------- report

KEYS = {"knn_accuracy", "recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision", "map@r"}
KEYS_CLUSTER = KEYS | {"nmi", "ari", "clustering_accuracy"}


def test_evaluate_embeddings_separated_blobs_are_perfect():
    x, y = blobs(200, 4, spread=20.0, seed=15)
    metrics = evaluate_embeddings(x, y)
    assert set(metrics) == KEYS_CLUSTER
    assert all(v == pytest.approx(1.0) for v in metrics.values())
    text = format_metrics(metrics)
    assert "map@r" in text and len({len(line) for line in text.splitlines()}) == 1  # aligned


def test_evaluate_embeddings_query_vs_ref_matches_parts():
    x, y = blobs(300, 5, spread=1.2, seed=16)
    q, ql, r, rl = x[:100], y[:100], x[100:], y[100:]
    metrics = evaluate_embeddings(q.numpy(), ql.numpy(), r, rl, knn_k=3, cluster=False)
    assert set(metrics) == KEYS
    assert metrics["knn_accuracy"] == pytest.approx(knn_vote_accuracy(q, ql, r, rl, k=3)[0])
    parts = retrieval_metrics(q, ql, r, rl)
    assert all(metrics[key] == pytest.approx(value) for key, value in parts.items())
    loo = evaluate_embeddings(x, y, seed=1)  # leave-one-out, and k-means with one cluster per class
    clusters = kmeans(x, 5, seed=1)
    expected = retrieval_metrics(x, y) | {"knn_accuracy": knn_vote_accuracy(x, y, k=5)[0], "nmi": nmi(y, clusters),
                                          "ari": ari(y, clusters),
                                          "clustering_accuracy": clustering_accuracy(y, clusters)[0]}
    assert set(loo) == KEYS_CLUSTER and loo == pytest.approx(expected)
    assert 0.5 < loo["knn_accuracy"] < 1  # overlapping blobs: neither trivial nor perfect


def test_evaluate_embeddings_errors():
    x, y = blobs(20, 2)
    with pytest.raises(UserError, match="19 embeddings|20 entries"):
        evaluate_embeddings(x[:19], y)
    with pytest.raises(UserError, match="dimension"):
        evaluate_embeddings(x, y, x[:, :4], y)
    with pytest.raises(UserError, match="both"):
        evaluate_embeddings(x, y, x)
    with pytest.raises(UserError, match="empty"):
        evaluate_embeddings(x[:0], y[:0])
    with pytest.raises(UserError, match="integers"):
        evaluate_embeddings(x, y.float())
    with pytest.raises(UserError, match="2-D"):
        evaluate_embeddings(x[0], y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x, y = blobs(300, 5, spread=1.2, seed=17)
    d, i = knn_search(x.cuda(), x.cuda(), 5, exclude_self=True, chunk_size=64, ref_chunk_size=100)
    assert d.is_cuda and torch.equal(i.cpu(), knn_search(x, x, 5, exclude_self=True)[1])
    on_gpu, on_cpu = evaluate_embeddings(x.cuda(), y.cuda()), evaluate_embeddings(x, y)
    assert all(on_gpu[key] == pytest.approx(value) for key, value in on_cpu.items())
