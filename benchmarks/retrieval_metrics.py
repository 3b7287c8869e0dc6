"""Retrieval metrics (Recall@K, Precision@1, R-Precision, MAP@R, NMI) of weakdml against pytorch-metric-learning's
AccuracyCalculator: time, peak memory and values, side by side, leave-one-out.

    python benchmarks/retrieval_metrics.py [--cases sop,fashion] [--n 60000] [--out benchmarks/results]

Cases (clustered random embeddings, L2-normalised, seeded): ``sop`` 512-d in 11,000 classes (R = 4-6), ``fashion``
128-d in 10 classes (R = 5,999 at 60,000). Sides, each in a fresh process (peak memory is that process's maximum
resident set, data included):
- ``pml``: ``AccuracyCalculator(k="max_bin_count")`` with its defaults (faiss kNN), then one with NMI only (faiss
  k-means at faiss's defaults: 25 iterations);
- ``api``: :func:`weakdml.evaluation.retrieval_metrics`, plus NMI of :func:`weakdml.evaluation.kmeans` at its
  defaults (k-means++ with 10 restarts up to 1,000 clusters, one exact Lloyd run from random seeds above);
- ``report``: :func:`weakdml.evaluation.evaluate_embeddings` as ``weakdml evaluate-embeddings`` and the run report
  call it: the kNN vote, Recall@K, P@1, R-Precision, MAP@R, then the same k-means, NMI, ARI and Hungarian accuracy
  (more than the other sides compute); its time is reported whole.
The PML process may use at most the memory available when the benchmark starts, less 1.5 GB (``RLIMIT_AS``), so it
fails cleanly instead of pushing the shared machine out of memory; a failure is reported as such.
Targets: api >= 2x PML's speed, <= 2 GB peak at 60,000 embeddings, values equal to 1e-4 (NMI: k-means differs).
Writes retrieval_metrics.json and retrieval_metrics.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from results_io import save

CASES = {"sop": (512, 11_000), "fashion": (128, 10)}  # dim, classes at 60,000 embeddings
SIDES = ("pml", "api", "report")
KEYS = ("precision@1", "r_precision", "map@r", "nmi")
PML_KEYS = {"precision_at_1": "precision@1", "r_precision": "r_precision", "mean_average_precision_at_r": "map@r",
            "NMI": "nmi"}
TARGET_SPEEDUP, TARGET_GB = 2.0, 2.0


def num_classes(case: str, n: int) -> int:
    """The case's classes at 60,000 embeddings; ``sop`` keeps its images per class at other sizes."""
    _dim, classes = CASES[case]
    return classes if case == "fashion" else max(2, round(classes * n / 60_000))


def embeddings(case: str, n: int):
    """(n, dim) float32 L2-normalised embeddings around random class centres, and labels (n,) in balanced classes."""
    import torch

    dim, classes = CASES[case][0], num_classes(case, n)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    labels = labels[torch.randperm(n, generator=g)]
    x = torch.randn(classes, dim, generator=g)[labels] + 1.2 * torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1), labels


def worker(side: str, case: str, n: int) -> dict:
    """One measurement in this process: seconds, peak resident memory (GB) and the metric values."""
    import numpy as np
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    from weakdml.evaluation import evaluate_embeddings, kmeans, nmi, retrieval_metrics

    x, y = embeddings(case, n)
    start = time.perf_counter()
    if side == "report":
        values = evaluate_embeddings(x, y)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "peak_gb": peak_gb(), "values": {k: float(np.float64(values[k])) for k in KEYS}}
    if side == "pml":
        calc = AccuracyCalculator(include=tuple(k for k in PML_KEYS if k != "NMI"), k="max_bin_count")
        values = {PML_KEYS[key]: value for key, value in calc.get_accuracy(x, y).items()}
    else:
        values = retrieval_metrics(x, y)
    retrieval_seconds, start = time.perf_counter() - start, time.perf_counter()
    if side == "pml":
        values["nmi"] = AccuracyCalculator(include=("NMI",)).get_accuracy(x, y)["NMI"]
    else:
        values["nmi"] = nmi(y.numpy(), kmeans(x, num_classes(case, n), seed=0))
    nmi_seconds = time.perf_counter() - start
    return {"seconds": retrieval_seconds + nmi_seconds, "retrieval_seconds": retrieval_seconds,
            "nmi_seconds": nmi_seconds, "peak_gb": peak_gb(),
            "values": {k: float(np.float64(values[k])) for k in KEYS}}


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GB


def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 8.0


def measure(side: str, case: str, n: int, limit_gb: float | None) -> dict:
    """Run :func:`worker` in a fresh process (with an address-space limit for PML)."""
    def limit() -> None:
        if limit_gb is not None:
            cap = int(limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    done = subprocess.run([sys.executable, __file__, "--worker", side, case, str(n)], capture_output=True, text=True,
                          preexec_fn=limit, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["killed"])[-1]
        return {"failed": f"exit {done.returncode}: {tail[:200]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(result: dict) -> str:
    lines = [(f"{result['n']:,} embeddings, leave-one-out, {result['machine']}, {result['threads']} threads, torch "
             f"{result['torch']}, pytorch-metric-learning {result['pml']}; one run per side, each in its own process"),
             "", ("Retrieval s: P@1, R-Precision and MAP@R (the neighbour search included); NMI s: its k-means (PML: "
             "faiss, 25 iterations; weakdml: its own, see the script's docstring); the report side is timed whole "
             "(it also computes the kNN vote, Recall@K, ARI and the Hungarian accuracy); peak GB: the process's "
             "resident maximum, data included."), "",
             ("| case | side | retrieval s | × PML | NMI s | total s | × PML | peak GB | P@1 | R-Precision | MAP@R "
             "| NMI |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case, sides in result["cases"].items():
        dim, classes = CASES[case][0], num_classes(case, result["n"])
        pml = sides["pml"]
        for side, m in sides.items():
            name = f"{case} ({dim}-d, {classes:,} classes)"
            if "failed" in m:
                lines.append(f"| {name} | {side} | failed: {m['failed']} | | | | | | | | | |")
                continue
            parts = "retrieval_seconds" in m
            speed = (f"{pml['retrieval_seconds'] / m['retrieval_seconds']:.2f}×" if parts else "",
                     f"{pml['seconds'] / m['seconds']:.2f}×") if "seconds" in pml else ("", "")
            retrieval, nmi_part = (f"{m['retrieval_seconds']:.1f}", f"{m['nmi_seconds']:.1f}") if parts else ("", "")
            v = m["values"]
            lines.append(f"| {name} | {side} | {retrieval} | {speed[0]} | {nmi_part} | "
                         f"{m['seconds']:.1f} | {speed[1]} | {m['peak_gb']:.2f} | "
                         + " | ".join(f"{v[k]:.5f}" for k in KEYS) + " |")
        if "values" in pml and "values" in sides["api"]:
            diff = max(abs(sides["api"]["values"][k] - pml["values"][k]) for k in KEYS[:3])
            lines.append(f"| {case} | api vs PML | | | | | | | max difference of P@1, R-Precision, MAP@R: "
                         f"{diff:.1e} | | | |")
    lines += ["", (f"Targets: api ≥ {TARGET_SPEEDUP}× PML's speed, ≤ {TARGET_GB} GB peak, values equal to 1e-4 "
                  "(NMI comes from k-means, which differs between the sides).")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="sop,fashion")
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--worker", nargs=3, metavar=("SIDE", "CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        side, case, n = args.worker
        print(json.dumps(worker(side, case, int(n))))
        return
    import pytorch_metric_learning
    import torch

    pml_limit = max(available_gb() - 1.5, 1.0)
    result = {"n": args.n, "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "pml": pytorch_metric_learning.__version__,
              "pml_memory_limit_gb": round(pml_limit, 1), "cases": {}}
    for case in args.cases.split(","):
        result["cases"][case] = {side: measure(side, case, args.n, pml_limit if side == "pml" else None)
                                 for side in SIDES}
        print(case, json.dumps(result["cases"][case]), flush=True)
    save(args.out, "retrieval_metrics", result, markdown(result))


if __name__ == "__main__":
    main()
