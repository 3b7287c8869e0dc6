"""The leave-one-out search that computes each distance once, against brute force and pytorch-metric-learning."""

import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

from weakdml.evaluation import knn as knn_module
from weakdml.evaluation import knn_search, retrieval_metrics
from weakdml.evaluation import retrieval as retrieval_module
from weakdml.evaluation.symmetric_knn import fits, symmetric_search


def brute(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = torch.cdist(x.double(), x.double()) ** 2
    d.fill_diagonal_(float("inf"))
    order = d.argsort(1)[:, :k]
    return d.gather(1, order), order


@pytest.mark.parametrize("n,k,rows", [(200, 5, 40), (95, 9, 10), (301, 30, 64), (50, 49, 7), (12, 3, 100)])
def test_symmetric_search_matches_brute_force(n, k, rows):
    """Many chunks, a last chunk with fewer rows than k (its seeds are partial), k = N - 1, a single chunk."""
    x = torch.rand(n, 6, generator=torch.Generator().manual_seed(n)) - 0.5
    found = list(symmetric_search(x, k, rows))
    assert [start for start, _, _ in found] == list(range(0, n, rows))
    d, i = torch.cat([p[1] for p in found]), torch.cat([p[2] for p in found])
    bd, bi = brute(x, k)
    assert torch.equal(i, bi)  # continuous data: no ties
    torch.testing.assert_close(d.double(), bd, rtol=1e-5, atol=1e-6)
    assert not (i == torch.arange(n).unsqueeze(1)).any()


def test_symmetric_search_finds_duplicates_in_other_chunks():
    x = torch.rand(60, 4, generator=torch.Generator().manual_seed(1))
    x = torch.cat([x, x[:20]])  # rows 60..79 repeat rows 0..19, several chunks away
    d, i = (torch.cat(parts) for parts in list(zip(*symmetric_search(x, 2, 16)))[1:])
    twins = torch.cat([torch.arange(60, 80), torch.arange(20)])
    rows = torch.cat([torch.arange(20), torch.arange(60, 80)])
    assert torch.equal(i[rows, 0], twins) and d[rows, 0].abs().max() < 1e-6


def test_knn_search_takes_the_symmetric_path_and_stays_exact(monkeypatch):
    calls = []
    original = knn_module.symmetric_search
    monkeypatch.setattr(knn_module, "symmetric_search", lambda *a: calls.append(a[1:]) or original(*a))
    x = torch.randn(400, 16, generator=torch.Generator().manual_seed(2))
    d, i = knn_search(x, x, 5, exclude_self=True, chunk_size=48, ref_chunk_size=400)
    assert calls == [(5, 48)]  # 9 chunks of 48 rows
    bd, bi = brute(x, 5)
    assert torch.equal(i, bi)
    torch.testing.assert_close(d.double(), bd, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(knn_search(x, x, 5, exclude_self=True, chunk_size=48, ref_chunk_size=400)[1], i)
    calls.clear()
    knn_search(x, x.clone() + 1e-3, 5, exclude_self=True, chunk_size=48, ref_chunk_size=400)  # not the same set
    knn_search(x, x, 7, exclude_self=True, chunk_size=48, ref_chunk_size=400)  # 7 * 8 > 48 rows
    assert calls == [] and not fits(7, 48)


def test_leave_one_out_retrieval_on_the_symmetric_path_matches_pml(monkeypatch):
    calls = []
    original = retrieval_module.symmetric_search
    monkeypatch.setattr(retrieval_module, "symmetric_search", lambda *a: calls.append(a[1:]) or original(*a))
    g = torch.Generator().manual_seed(3)
    y = torch.arange(600) % 100  # R = 5 for every query
    x = torch.randn(100, 8, generator=g)[y] + 0.4 * torch.randn(600, 8, generator=g)
    ours = retrieval_metrics(x, y, ks=(1, 2, 4, 8), chunk_size=64)
    assert calls == [(8, 64)]  # max(R, 8) neighbours, 10 chunks
    calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                              k="max_bin_count", knn_func=CustomKNN(LpDistance(normalize_embeddings=False)))
    ref = calc.get_accuracy(x, y)
    assert 0.2 < ref["mean_average_precision_at_r"] < 0.9  # not trivial
    assert ours["precision@1"] == pytest.approx(ref["precision_at_1"], abs=1e-9)
    assert ours["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-9)
    assert ours["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-9)
    recall = knn_search(x, x, 8, exclude_self=True, chunk_size=4, ref_chunk_size=4)[1]  # the plain blocked search
    hits = y[recall] == y.unsqueeze(1)
    for k in (1, 2, 4, 8):
        assert ours[f"recall@{k}"] == pytest.approx(hits[:, :k].any(1).double().mean().item(), abs=1e-12)
