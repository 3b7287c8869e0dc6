"""Throughput of training steps with 1 and 2 processes (torchrun, gloo on the CPU, one thread each), the scaling
efficiency, and the cost of the gathers that losses over the whole batch need.

    python benchmarks/distributed.py [--steps 20] [--batch-size 256] [--processes 1 2] [--out benchmarks/results]

Each configuration runs ``--steps`` timed training steps (after 3 warm-up steps) of the engine's own path: the
method's index batches, this process's rows loaded, the method called through DistributedDataParallel, its loss
weighted by the process's share, backward, Adam step. Methods: ``nngk`` (a loss averaged over each process's rows)
and ``ms`` (Multi-Similarity on the embeddings gathered from every process), small-cnn on digits at 32 px, BatchNorm
in eval mode. ``gather ms``: the median time of one gather of this batch's embeddings (with its backward) alone.
Efficiency = images/s with N processes / (N x images/s with 1). On this project's 2-core machine the 2-process runs
use both cores while the 1-process run uses one. Writes distributed.json and distributed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from results_io import save

METHODS = {"nngk": {}, "ms": {"m_per_class": 4}}


def worker(steps: int, batch_size: int, out: Path) -> None:
    """One process of a torchrun launch: time every method's steps; rank 0 writes the figures to ``out``."""
    from weakdml.config import build_config
    from weakdml.data.prepare import prepare_data
    from weakdml.engine import dist
    from weakdml.engine.optim import build_optimizer
    from weakdml.engine.stages import build_method
    from weakdml.engine.trainer import distributed, load_batch, rank_loss
    from weakdml.methods import METHODS as ALL

    torch.set_num_threads(1)
    dist.start("cpu")
    figures: dict[str, dict[str, float]] = {}
    for name, settings in METHODS.items():
        cfg = build_config(overrides={"method": name, "dataset": "digits", "input_size": 32, "batchnorm": "eval",
                                      "batch_size": batch_size, "device": "cpu", **settings})
        data = prepare_data(cfg)
        method = build_method(cfg, ALL[name], data, torch.device("cpu"))
        network, optimizer = distributed(method, cfg), build_optimizer(method.parameter_groups(), cfg.optim)
        method.train()
        method.on_epoch_start(0)
        times, epoch = [], 0
        while len(times) < steps + 3:
            method.seed_epoch(epoch)
            for batch in method.batches(epoch):
                started = time.perf_counter()
                batch = load_batch(method, batch)
                loss = rank_loss(network(batch)["loss"], batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                times.append(time.perf_counter() - started)
            epoch += 1
        step = statistics.median(times[3:steps + 3])
        embeddings = torch.randn(len(dist.shard(torch.arange(batch_size))), method.model.dim, requires_grad=True)
        gathers = []
        for _ in range(20):
            started = time.perf_counter()
            dist.gather(embeddings).sum().backward()
            gathers.append(time.perf_counter() - started)
        figures[name] = {"step_ms": 1000 * step, "images_per_s": batch_size / step,
                         "gather_ms": 1000 * statistics.median(gathers)}
    if dist.is_main():
        out.write_text(json.dumps(figures))
    dist.stop()


def launch(processes: int, steps: int, batch_size: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "figures.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   __file__, "--worker", "--steps", str(steps), "--batch-size", str(batch_size), "--figures", str(out)]
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--figures", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.batch_size, args.figures)
        return
    runs = {n: launch(n, args.steps, args.batch_size) for n in args.processes}
    rows = ["| method | processes | step (ms) | images/s | efficiency | gather + backward (ms) |",
            "|---|---|---|---|---|---|"]
    for name in METHODS:
        single = runs[min(runs)][name]["images_per_s"] / min(runs)
        for n, figures in runs.items():
            f = figures[name]
            rows.append(f"| {name} | {n} | {f['step_ms']:.1f} | {f['images_per_s']:.0f} | "
                        f"{f['images_per_s'] / (n * single):.2f} | {f['gather_ms']:.2f} |")
    text = (f"# Training steps on 1 and more processes (gloo, CPU)\n\nbatch {args.batch_size} (global), small-cnn, "
            f"digits at 32 px, median of {args.steps} steps; {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, one thread per process.\n\n" + "\n".join(rows) + "\n")
    save(args.out, "distributed", {"batch_size": args.batch_size, "steps": args.steps,
                                   "runs": {str(n): f for n, f in runs.items()}}, text)


if __name__ == "__main__":
    main()
