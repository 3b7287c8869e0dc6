"""faiss's approximate indexes (--knn faiss-ivf | faiss-hnsw): their recall against exact search on clustered data,
retrieval metrics close to the exact ones, the NNGK bank's neighbour lists, and a run that evaluates with one."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from weakdml.cli import main
from weakdml.evaluation.faiss_index import FaissIndex, searches_on_gpus
from weakdml.evaluation.knn import knn_search
from weakdml.evaluation.retrieval import retrieval_metrics
from weakdml.methods.nngk_head import NNGKHead

pytestmark = pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss not installed")


def clustered(n: int, dim: int = 32, classes: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centres = torch.randn(classes, dim, generator=g) * 3
    return centres[labels] + torch.randn(n, dim, generator=g), labels


@pytest.mark.parametrize("kind", ["faiss-ivf", "faiss-hnsw"])
def test_approximate_search_finds_the_exact_nearest_neighbours(kind: str) -> None:
    points, _ = clustered(20_500)
    refs, queries = points[:20_000], points[20_000:]
    _, exact = knn_search(queries, refs, 10)
    distances, found = knn_search(queries, refs, 10, backend=kind)
    recall_at_1 = (found[:, 0] == exact[:, 0]).float().mean().item()
    recall_at_10 = torch.tensor([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(found, exact)]).mean()
    assert recall_at_1 >= 0.9 and recall_at_10 >= 0.8, (recall_at_1, recall_at_10)
    assert (distances[:, 1:] >= distances[:, :-1]).all()  # nearest first


def test_leaving_out_self_and_the_slots_an_index_cannot_fill() -> None:
    refs, _ = clustered(3000)
    _, idx = knn_search(refs, refs, 5, exclude_self=True, backend="faiss-hnsw")
    assert not (idx == torch.arange(3000)[:, None]).any()
    distances, idx = FaissIndex(refs, "faiss-ivf").search(refs[:10] + 100, 3000)  # far away: few lists probed
    assert (idx < 0).any() and torch.isinf(distances[idx < 0]).all()


@pytest.mark.parametrize("kind", ["faiss-ivf", "faiss-hnsw"])
def test_retrieval_metrics_with_an_approximate_index_are_close_to_exact(kind: str) -> None:
    x, y = clustered(6000, classes=20)
    exact = retrieval_metrics(x, y, chunk_size=512)
    approximate = retrieval_metrics(x, y, chunk_size=512, backend=kind)
    for key in ("recall@1", "precision@1", "map@r", "r_precision"):
        assert approximate[key] == pytest.approx(exact[key], abs=0.03), key


def test_the_nngk_bank_neighbour_lists_from_an_approximate_index() -> None:
    centres, labels = clustered(4000)
    exact, approximate = (NNGKHead(4000, 32, 50, 20, 1.0, backend=b) for b in ("torch", "faiss-ivf"))
    for head in (exact, approximate):
        head.refresh(centres, labels, 0)
    assert (approximate.train_neighbours >= 0).all()
    assert not (approximate.train_neighbours == torch.arange(4000)[:, None]).any()
    overlap = [len(set(a.tolist()) & set(b.tolist())) / 20 for a, b in zip(exact.train_neighbours,
                                                                             approximate.train_neighbours)]
    assert sum(overlap) / len(overlap) > 0.8


@pytest.mark.slow
def test_a_run_evaluates_with_faiss_hnsw(tmp_path: Path) -> None:
    args = ["train", "--dataset", "digits", "--epochs", "2", "--progress", "off", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "exact")]) == 0
    assert main([*args, "--knn", "faiss-hnsw", "--out", str(tmp_path / "hnsw")]) == 0
    exact, hnsw = (json.loads((tmp_path / run / "final_metrics.json").read_text()) for run in ("exact", "hnsw"))
    assert hnsw["test_accuracy"] == pytest.approx(exact["test_accuracy"], abs=0.02)
    assert hnsw["test_recall@1"] == pytest.approx(exact["test_recall@1"], abs=0.02)


def test_an_index_moves_to_a_gpu_only_where_faiss_can_search_there() -> None:
    """faiss-cpu also defines ``index_cpu_to_all_gpus`` (which raises when called): what decides is GPU support and a
    visible GPU, so a CPU build keeps the index on the CPU whatever the embeddings' device."""
    import faiss

    if hasattr(faiss, "StandardGpuResources"):
        pytest.skip("a faiss built with GPU support")
    assert hasattr(faiss, "index_cpu_to_all_gpus")  # the attribute that was once taken for GPU support
    assert not searches_on_gpus(faiss)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_embeddings_search_like_cpu_ones() -> None:
    """Embeddings on a GPU: the flat index gives the CPU's neighbours, on the queries' device."""
    x, _ = clustered(2000)
    _, i = knn_search(x.cuda(), x.cuda(), 5, exclude_self=True, backend="faiss")
    assert i.is_cuda and torch.equal(i.cpu(), knn_search(x, x, 5, exclude_self=True, backend="faiss")[1])
