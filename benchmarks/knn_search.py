"""Nearest-neighbour search at scale: exact (torch, chunked) against faiss's IVF and HNSW indexes (``--knn``) on
synthetic clustered embeddings: build time, search time and Recall@1 / Recall@10 of the approximate search against
the exact neighbours.

    python benchmarks/knn_search.py [--refs 1000000] [--queries 2000] [--dim 128] [--out benchmarks/results]

The refs are N points around N / 20 Gaussian centres (unit noise, centres spread 3x), the queries further points of
the same clusters; k = 10. Writes knn_search.json and knn_search.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from results_io import save

from weakdml.evaluation.faiss_index import FaissIndex
from weakdml.evaluation.knn import knn_search

K = 10


def clustered(n: int, dim: int, generator: torch.Generator, centres: torch.Tensor) -> torch.Tensor:
    which = torch.randint(0, len(centres), (n,), generator=generator)
    return centres[which] + torch.randn(n, dim, generator=generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refs", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(max(2, args.refs // 20), args.dim, generator=g)
    refs, queries = clustered(args.refs, args.dim, g, centres), clustered(args.queries, args.dim, g, centres)
    started = time.perf_counter()
    _, exact = knn_search(queries, refs, K)
    results = {"exact": {"build_s": 0.0, "search_s": time.perf_counter() - started, "recall@1": 1.0,
                         "recall@10": 1.0}}
    for kind in ("faiss-ivf", "faiss-hnsw"):
        started = time.perf_counter()
        index = FaissIndex(refs, kind)
        built = time.perf_counter()
        _, found = index.search(queries, K)
        searched = time.perf_counter()
        overlap = (found[:, :, None] == exact[:, None, :]).any(2).float().mean().item()
        results[kind] = {"build_s": built - started, "search_s": searched - built,
                         "recall@1": (found[:, 0] == exact[:, 0]).float().mean().item(), "recall@10": overlap}
        print(kind, results[kind], flush=True)
    rows = ["| search | build (s) | search (s) | queries/s | Recall@1 | Recall@10 |", "|---|---|---|---|---|---|"]
    for kind, r in results.items():
        rows.append(f"| {kind} | {r['build_s']:.1f} | {r['search_s']:.2f} | {args.queries / r['search_s']:.0f} | "
                    f"{r['recall@1']:.3f} | {r['recall@10']:.3f} |")
    text = (f"# Nearest-neighbour search: exact against faiss IVF and HNSW\n\n{args.refs:,} refs, {args.queries:,} "
            f"queries, {args.dim}-d, k {K}; {platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads.\n\n" + "\n".join(rows) + "\n")
    save(args.out, "knn_search", {"refs": args.refs, "queries": args.queries, "dim": args.dim, "k": K,
                                  "results": results}, text)


if __name__ == "__main__":
    main()
