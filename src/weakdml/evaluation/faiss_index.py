"""faiss indexes for nearest-neighbour search by squared Euclidean distance: flat (exact), IVF and HNSW
(approximate, for banks and test sets of ~10^6 embeddings and more; their recall against exact search:
benchmarks/knn_search.py). On the CPU; a faiss built with GPU support moves the flat and IVF indexes to the GPU of
the embeddings when they are on one.

IVF clusters the refs into ``nlist`` ≈ 4·√N lists (k-means on at most 64 refs per list) and searches the
``nprobe`` nearest lists; HNSW walks a graph of ``M`` links per node with a search breadth ``efSearch`` (at least k).
An approximate search may find fewer than k refs (IVF, when the probed lists hold fewer): those slots hold index -1
and distance inf.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from weakdml.errors import UserError

KINDS = ("faiss", "faiss-ivf", "faiss-hnsw")
IVF_PROBES, HNSW_LINKS, HNSW_EF_SEARCH = 16, 32, 128


def _faiss():
    try:
        import faiss
    except ImportError as error:
        raise UserError("faiss is not installed: pip install faiss-cpu (or faiss-gpu)") from error
    return faiss


def searches_on_gpus(faiss) -> bool:
    """Whether this faiss is built with GPU support and sees a GPU (faiss-cpu also has ``index_cpu_to_all_gpus``,
    which fails when called)."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@functools.cache
def _gpu_resources(faiss):
    """One set of faiss GPU resources (scratch memory, streams) for every index of the process."""
    return faiss.StandardGpuResources()


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())


class FaissIndex:
    """An index of refs (N, D) of kind ``faiss`` (flat), ``faiss-ivf`` or ``faiss-hnsw``, searched by ``search``."""

    def __init__(self, refs: torch.Tensor, kind: str, seed: int = 0) -> None:
        if kind not in KINDS:
            raise UserError(f"unknown faiss index {kind!r}: use one of {', '.join(KINDS)}")
        faiss = _faiss()
        n, dim = refs.shape
        data = _numpy(refs)
        if kind == "faiss-hnsw":
            self.index = faiss.IndexHNSWFlat(dim, HNSW_LINKS)
        elif kind == "faiss-ivf" and n >= 1024:
            lists = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training points per list
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, lists)
            train = data[np.random.default_rng(seed).permutation(n)[:64 * lists]]
            self.index.cp.seed = seed
            self.index.train(train)
            self.index.nprobe = min(IVF_PROBES, lists)
        else:  # flat; IVF on fewer than 1,024 refs is no faster than exact search
            self.index = faiss.IndexFlatL2(dim)
        if refs.is_cuda and kind != "faiss-hnsw" and searches_on_gpus(faiss):
            self.index = faiss.index_cpu_to_gpu(_gpu_resources(faiss), refs.device.index or 0, self.index)
        self.index.add(data)
        self.kind = kind

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(squared distances (Q, k) float32, indices (Q, k) long) on the queries' device, nearest first."""
        if self.kind == "faiss-hnsw":
            self.index.hnsw.efSearch = max(HNSW_EF_SEARCH, k)
        d, i = self.index.search(_numpy(queries), k)
        d, i = torch.from_numpy(d), torch.from_numpy(i).long()
        d[i < 0] = math.inf
        return d.to(queries.device), i.to(queries.device)

    def search_without_self(self, queries: torch.Tensor, k: int, first: int) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``search``, where query row j is ref ``first + j``: that ref is left out of its own list (or, when the
        search missed it, the farthest one)."""
        d, i = self.search(queries, k + 1)  # (Q, k + 1)
        drop = i == torch.arange(first, first + len(i), device=i.device).unsqueeze(1)
        drop[~drop.any(1), -1] = True
        return d[~drop].view(len(i), k), i[~drop].view(len(i), k)
