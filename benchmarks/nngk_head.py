"""Speed of the vectorised NNGK head against a per-sample loop (as in the original code), and the cost of a whole
NNGK training step over a plain cross-entropy step with the same backbone and batch.

    python benchmarks/nngk_head.py [--out benchmarks/results]

Prints a table and writes nngk_head.json / nngk_head.md. Ratios are measured within one run (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from weakdml.config import ModelConfig
from weakdml.methods.nngk_head import NNGKHead
from weakdml.models.embedding import EmbeddingNet


def loop_nll(z, head: NNGKHead, centre_index, labels):
    """The original code's structure: a Python loop over the batch; per sample, the distances to its K neighbours,
    the weighted kernels, a (classes × K) class mask to sum them per class, a 1e-10 floor, normalisation, log."""
    classes = torch.arange(head.num_classes)[:, None]
    weights = head.log_weights.exp()
    log_probs = []
    for b in range(z.shape[0]):
        nbr = head.train_neighbours[centre_index[b]]
        kernel = torch.exp(-((z[b] - head.centres[nbr]) ** 2).sum(1) / (2 * head.sigma ** 2)) * weights[nbr]
        mask = classes == head.centre_labels[nbr][None, :]  # (C, K)
        per_class = torch.zeros(head.num_classes, len(nbr))
        per_class[mask] = kernel.expand(head.num_classes, -1)[mask]
        p = per_class.sum(1)
        p = torch.where(p == 0, torch.full_like(p, 1e-10), p)
        log_probs.append(torch.log(p / p.sum()))
    return F.nll_loss(torch.stack(log_probs), labels)


def vector_nll(z, head: NNGKHead, centre_index, labels):
    return F.cross_entropy(head.train_log_scores(z, centre_index), labels)


def time_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def head_setting(batch: int, k: int, dim: int, centres: int, classes: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    head = NNGKHead(centres, dim, classes, k, sigma=10.0)
    head.refresh(torch.randn(centres, dim, generator=g), torch.randint(0, classes, (centres,), generator=g), 0)
    z = torch.randn(batch, dim, generator=g, requires_grad=True)
    idx = torch.randint(0, centres, (batch,), generator=g)
    labels = head.centre_labels[idx]

    def step(loss_fn):
        return lambda: loss_fn(z, head, idx, labels).backward()

    loop, vec = time_ms(step(loop_nll), repeats), time_ms(step(vector_nll), repeats)
    return {"batch": batch, "K": k, "dim": dim, "centres": centres, "classes": classes,
            "loop_ms": loop, "vectorised_ms": vec, "speedup": loop / vec}


def whole_step_overhead(batch: int, repeats: int) -> dict:
    """small-cnn on 28×28 images, 128-d embedding: NNGK head (5,000 centres, K 200) vs a linear CE head."""
    torch.manual_seed(0)
    net = EmbeddingNet(ModelConfig(), 1, 28)
    classifier = torch.nn.Linear(net.dim, 10)
    head = NNGKHead(5000, net.dim, 10, 200, sigma=10.0)
    head.refresh(torch.randn(5000, net.dim), torch.randint(0, 10, (5000,)), 0)
    params = list(net.parameters()) + list(classifier.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-4)
    x = torch.rand(batch, 1, 28, 28)
    idx = torch.randint(0, 5000, (batch,))
    y = head.centre_labels[idx]

    def step(loss):
        def run():
            opt.zero_grad()
            loss().backward()
            opt.step()
        return run

    ce = time_ms(step(lambda: F.cross_entropy(classifier(net(x)), y)), repeats)
    nngk = time_ms(step(lambda: vector_nll(net(x), head, idx, y)), repeats)
    return {"batch": batch, "cross_entropy_ms": ce, "nngk_ms": nngk, "overhead": nngk / ce}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    heads = [head_setting(32, 200, 2048, 5000, 10, args.repeats),  # the original paper's setting
             head_setting(128, 200, 512, 5000, 100, args.repeats)]
    step = whole_step_overhead(128, args.repeats)
    result = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "head": heads, "whole_step": step}
    lines = ["| batch | K | dim | centres | classes | loop ms | vectorised ms | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {h['batch']} | {h['K']} | {h['dim']} | {h['centres']} | {h['classes']} | {h['loop_ms']:.2f} | "
              f"{h['vectorised_ms']:.2f} | {h['speedup']:.1f}× |" for h in heads]
    lines += ["", "| whole step (small-cnn, 28 px, batch 128) | cross-entropy ms | NNGK ms | overhead |",
              "|---|---|---|---|",
              f"| | {step['cross_entropy_ms']:.1f} | {step['nngk_ms']:.1f} | {step['overhead']:.2f}× |"]
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nngk_head.json").write_text(json.dumps(result, indent=2))
    (out / "nngk_head.md").write_text(f"CPU threads: {result['threads']}, torch {result['torch']}\n\n{table}\n")


if __name__ == "__main__":
    main()
