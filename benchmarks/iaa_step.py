"""Cost of IAA: a Multi-Similarity step with IAA (M = 3 copies) against Multi-Similarity alone, and the statistics
update at Stanford Online Products scale against a per-class loop with the original code's structure.

    python benchmarks/iaa_step.py [--repeats 30] [--out benchmarks/results] [--device auto]

Steps (batch 128, 512-d, 32 classes x 4 images, MS loss + MS miner with the IAA paper's settings), interleaved, median
over rounds: ``loss`` is the loss's forward and backward on embeddings that need a gradient; ``small-cnn step`` is a
whole training step of weakdml's small CNN (1x28x28 images, as in the class-disjoint Fashion-MNIST study) with a
512-d embedding: forward, loss, backward, Adam step. (A GoogLeNet step, the paper's, costs far more on both sides than
the loss.) Statistics: 60,000 embeddings in 11,318 classes
(per-class mode), with and without the neighbour correction; the loop mirrors the original's ``update_each_class``:
one class at a time (a mask over all embeddings per class), then the class-distance matrices and a loop over classes
for the neighbour weights. Targets: MS+IAA step <= 1.15x the MS step; update >= 20x faster than the loop.
Writes iaa_step.json and iaa_step.md.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from device_clock import clock, machine, result_name
from results_io import save

from weakdml.config import ModelConfig
from weakdml.engine.environment import resolve_device
from weakdml.losses import ClassStatistics, IAALoss, multi_similarity
from weakdml.models.embedding import EmbeddingNet

BATCH, DIM, CLASSES = 128, 512, 32
SOP_N, SOP_CLASSES = 60_000, 11_318
TARGET_STEP, TARGET_UPDATE = 1.15, 20.0


def step_times(repeats: int, device: torch.device) -> dict[str, dict[str, float]]:
    """Median ms of the loss alone and of a small-cnn training step, MS and MS+IAA interleaved."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(BATCH) % CLASSES
    images = torch.rand(CLASSES, 1, 28, 28, generator=g)[labels] + 0.3 * torch.rand(BATCH, 1, 28, 28, generator=g)
    labels, images = labels.to(device), images.to(device)
    torch.manual_seed(0)
    net = EmbeddingNet(ModelConfig(embedding_dim=DIM, l2_normalize=False), 1, 28).to(device)  # IAA: noise before L2
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    losses = {"ms": _ms_loss().to(device), "ms+iaa": _ms_loss(num_copies=3, lam=0.8).to(device)}  # "ms": plain MS
    with torch.no_grad():
        losses["ms+iaa"].update_statistics(net(images.repeat(4, 1, 1, 1)), labels.repeat(4))
        embedded = net(images)
    times: dict[str, dict[str, list[float]]] = {name: {"loss": [], "small-cnn step": []} for name in losses}

    def loss_only(loss: IAALoss) -> None:
        loss(embedded.clone().requires_grad_(True), labels).backward()

    def network_step(loss: IAALoss) -> None:
        value = loss(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    for round_ in range(repeats + 3):  # 3 warm-up rounds
        for name, loss in losses.items():
            for kind, fn in (("loss", loss_only), ("small-cnn step", network_step)):
                start = clock(device)
                fn(loss)
                if round_ >= 3:
                    times[name][kind].append(1000 * (clock(device) - start))
    return {name: {kind: statistics.median(v) for kind, v in kinds.items()} for name, kinds in times.items()}


def _ms_loss(**iaa: float) -> IAALoss:
    loss, miner = multi_similarity()
    return IAALoss(loss, CLASSES, DIM, miner=miner, **iaa)


def loop_update(stats: ClassStatistics, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """The original's structure: a Python loop over classes, then all-pairs class distances and a loop over classes
    for the neighbour weights (with the corrections of weakdml: Euclidean distance of the means, min-max over the
    candidates). Seconds of the two parts."""
    start = clock(x.device)
    classes, inverse, counts = torch.unique(y, sorted=True, return_inverse=True, return_counts=True)
    for i in range(len(classes)):
        count = int(counts[i])
        if count > 1:
            xc = x[inverse == i]
            mean, var = xc.mean(0), (xc - xc.mean(0)).pow(2).mean(0)
            w = max(count / (float(stats.amount[i]) + count), 1 - stats.momentum)
            stats.variance[i] = stats.variance[i] * (1 - w) + var * w + w * (1 - w) * (stats.mean[i] - mean).pow(2)
            stats.mean[i] = stats.mean[i] * (1 - w) + mean * w
        stats.amount[i] += count
    statistics_s, start = clock(x.device) - start, clock(x.device)
    valid = counts > 1
    n = counts.float()
    global_var = (stats.variance[valid] * n[valid, None]).sum(0) / n[valid].sum()
    own = torch.eye(len(classes), dtype=torch.bool, device=x.device)
    d_mean = torch.cdist(stats.mean, stats.mean) + (~valid | own) * 1e12
    d_cov = torch.cdist(stats.variance, stats.variance)
    nearest = d_mean.topk(stats.num_neighbours, dim=1, largest=False).indices
    corrected = stats.variance.clone()
    for i in range(len(classes)):
        cand = valid.clone()
        cand[i] = False
        dm, dc = d_mean[i][cand], d_cov[i][cand]
        dm_i = (d_mean[i][nearest[i]] - dm.min()) / (dm.max() - dm.min())
        dc_i = (d_cov[i][nearest[i]] - dc.min()) / (dc.max() - dc.min())
        w = torch.exp(-dm_i.pow(2) / 2 - dc_i.pow(2) / 2) * n[nearest[i]]
        a = 1 / (1 + torch.log(1 + stats.beta * (n[i] - 1))) * float(n[i] < stats.tau)
        neighbour = (stats.variance[nearest[i]] * w.unsqueeze(1)).sum(0) / w.sum()
        corrected[i] = (1 - a) * stats.variance[i] + a * ((1 - stats.gamma) * neighbour + stats.gamma * global_var)
    stats.corrected.copy_(corrected)
    return statistics_s, clock(x.device) - start


def update_times(n: int, classes: int, device: torch.device, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Median seconds over ``rounds`` (interleaved, each from fresh statistics) of one statistics update of n
    embeddings in classes and of its neighbour correction, vectorised and looped."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    x = torch.randn(classes, DIM, generator=g)[y] + 0.5 * torch.randn(n, DIM, generator=g)
    x, y = x.to(device), y.to(device)
    seconds: dict[str, list[float]] = {"without": [], "correction": [], "loop_statistics": [], "loop_correction": []}
    for _ in range(rounds):
        fast = ClassStatistics(classes, DIM, neighbour_correction=False).to(device)
        start = clock(device)
        fast.update(x, y)
        seconds["without"].append(clock(device) - start)
        start = clock(device)
        corrected = fast.corrected_variance()
        seconds["correction"].append(clock(device) - start)
        slow = ClassStatistics(classes, DIM).to(device)
        for name, value in zip(("loop_statistics", "loop_correction"), loop_update(slow, x, y)):
            seconds[name].append(value)
    without, correction, loop_statistics, loop_correction = (statistics.median(v) for v in seconds.values())
    parts = {"statistics (moving update per class)": (without, loop_statistics, fast.variance, slow.variance),
             "neighbour correction (Eq. 15)": (correction, loop_correction, corrected, slow.corrected),
             "both": (without + correction, loop_statistics + loop_correction, corrected, slow.corrected)}
    return {name: {"vectorised_s": a, "loop_s": b, "speedup": b / a, "same": torch.allclose(u, v, atol=1e-5)}
            for name, (a, b, u, v) in parts.items()}


def markdown(result: dict) -> str:
    steps, lines = result["steps_ms"], []
    lines += [(f"batch {BATCH} (random 1x28x28 images), {DIM}-d, {CLASSES} classes x 4, MS loss + miner (thresh 0.5, "
              f"margin 0.1, scale_pos 2, scale_neg 40); {result['machine']}, {result['threads']} threads, torch "
              f"{result['torch']}; median of {result['repeats']} rounds after 3 warm-up, interleaved"), "",
              "| part | MS ms | MS+IAA (M = 3) ms | × MS | target ≤ 1.15× |", "|---|---|---|---|---|"]
    for kind in ("loss", "small-cnn step"):
        ratio = steps["ms+iaa"][kind] / steps["ms"][kind]
        lines.append(f"| {kind} | {steps['ms'][kind]:.1f} | {steps['ms+iaa'][kind]:.1f} | {ratio:.2f}× | "
                     f"{'yes' if ratio <= TARGET_STEP else 'no'} |")
    lines += ["", (f"Statistics update, {result['sop_n']:,} embeddings x {DIM}-d in {result['sop_classes']:,} classes "
                  "(per-class mode), medians of 3 interleaved rounds"), "",
              "| update | vectorised s | per-class loop s | speed-up | same values | target ≥ 20× |",
              "|---|---|---|---|---|---|"]
    for name, u in result["update"].items():
        lines.append(f"| {name} | {u['vectorised_s']:.2f} | {u['loop_s']:.2f} | {u['speedup']:.1f}× | "
                     f"{'yes' if u['same'] else 'no'} | {'yes' if u['speedup'] >= TARGET_UPDATE else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sop-n", type=int, default=SOP_N, help=argparse.SUPPRESS)  # smaller for a smoke test
    parser.add_argument("--sop-classes", type=int, default=SOP_CLASSES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    result = {"machine": machine(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "repeats": args.repeats, "steps_ms": step_times(args.repeats, device), "sop_n": args.sop_n,
              "sop_classes": args.sop_classes, "update": update_times(args.sop_n, args.sop_classes, device)}
    save(args.out, result_name("iaa_step", device), result, markdown(result))


if __name__ == "__main__":
    main()
