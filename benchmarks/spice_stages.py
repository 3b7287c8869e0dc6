"""Cost of SPICE's stages: a MoCo v2 step against a cross-entropy step at the same batch, SPICE-Self's prototype
pseudo-labelling of a big batch against a loop with the original code's structure, and the reliable-sample selection
over 70,000 embeddings.

    python benchmarks/spice_stages.py [--repeats 20] [--out benchmarks/results] [--device auto]

- Steps: small-cnn on random 1x28x28 images (as ``methods_step.py``), batch 256 (MoCo v2's), each step a whole
  training step with its augmentation (cross-entropy: ``weak``; MoCo: two aug+ views, the key encoder's shuffled
  sub-batches, the queue); interleaved, median over rounds. Target: MoCo <= 1.6x cross-entropy.
- Pseudo-labels: 5,000 images, 10 heads, 10 clusters, 512-d L2-normalised features (a ResNet-18's), random head
  probabilities. The loop has the structure of the original's ``select_samples``: per head a full sort of the scores,
  the prototypes one cluster at a time, then a full argsort of the prototype similarities. Same selection checked.
  Target: >= 10x the loop.
- Reliable samples: 70,000 embeddings (Fashion-MNIST's size) of 512 dimensions in 10 clusters, k = 100 neighbours,
  in a fresh process: seconds and peak resident memory (the embeddings included; on a GPU, its peak allocation).
Writes spice_stages.json and spice_stages.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys

import torch
from device_clock import clock, machine, result_name
from methods_step import prepare, random_data
from results_io import save

from weakdml.engine.environment import resolve_device
from weakdml.spice.pseudo_labels import prototype_pseudo_labels
from weakdml.spice.reliable import reliable_samples

STEP_BATCH, BIG_BATCH, HEADS, CLUSTERS, DIM = 256, 5000, 10, 10, 512
RELIABLE_N, RELIABLE_K = 70_000, 100
TARGET_STEP, TARGET_PSEUDO = 1.6, 10.0


def step_times(repeats: int, device: torch.device, warmup: int = 3) -> dict[str, float]:
    """Median ms of a cross-entropy and a MoCo training step at batch 256, interleaved."""
    data = random_data()
    runs = [t for name in ("cross-entropy", "moco") for t in prepare(name, data, device, warmup + repeats,
                                                                      STEP_BATCH)]
    for r in range(warmup + repeats):
        for t in runs:
            start = clock(device)
            t.step(t.batches[r])
            if r >= warmup:
                t.seconds.append(clock(device) - start)
    return {t.name: 1000 * statistics.median(t.seconds) for t in runs}


def loop_pseudo_labels(scores: torch.Tensor, features: torch.Tensor, center_ratio: float = 0.5
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's structure, head by head: sort each cluster's scores, average the k most confident features
    cluster by cluster, then argsort every image by its similarity to each prototype and keep the first M."""
    h, n, c = scores.shape
    per_cluster = n // c
    k, m = max(1, int(center_ratio * per_cluster)), per_cluster
    indices, labels = [], []
    for head in range(h):
        order = torch.sort(scores[head], dim=0, descending=True).indices[:k]  # (k, C)
        prototypes = torch.stack([features[order[:, cluster]].mean(0) for cluster in range(c)])  # (C, D)
        similarity = torch.einsum("cd,nd->cn", prototypes, features)
        indices.append(torch.argsort(similarity, dim=1, descending=True)[:, :m].flatten())
        labels.append(torch.arange(c, device=features.device).repeat_interleave(m))
    return torch.stack(indices), torch.stack(labels)


def pseudo_label_times(repeats: int, device: torch.device) -> dict[str, float | bool]:
    """Median ms of both over ``repeats`` rounds (interleaved), and whether they select the same images."""
    g = torch.Generator().manual_seed(0)
    scores = (3 * torch.randn(HEADS, BIG_BATCH, CLUSTERS, generator=g)).softmax(-1).to(device)
    features = torch.nn.functional.normalize(torch.randn(BIG_BATCH, DIM, generator=g), dim=1).to(device)
    fast = prototype_pseudo_labels(scores, features)
    slow_indices, slow_labels = loop_pseudo_labels(scores, features)
    m = BIG_BATCH // CLUSTERS
    same = torch.equal(fast.labels, slow_labels) and torch.equal(  # the same images per head and cluster
        fast.indices.view(HEADS, CLUSTERS, m).sort(-1).values, slow_indices.view(HEADS, CLUSTERS, m).sort(-1).values)
    times: dict[str, list[float]] = {"vectorised": [], "loop": []}
    for _ in range(repeats + 2):
        for name, fn in (("vectorised", lambda: prototype_pseudo_labels(scores, features)),
                         ("loop", lambda: loop_pseudo_labels(scores, features))):
            start = clock(device)
            fn()
            times[name].append(1000 * (clock(device) - start))
    result: dict[str, float | bool] = {name: statistics.median(v[2:]) for name, v in times.items()}
    result["same"] = same
    return result


def reliable_worker(device: torch.device) -> dict[str, float | int]:
    """One reliable selection over 70,000 clustered embeddings, in this process."""
    g = torch.Generator().manual_seed(0)
    truth = torch.randint(0, CLUSTERS, (RELIABLE_N,), generator=g)
    features = torch.randn(CLUSTERS, DIM, generator=g)[truth] + 2.0 * torch.randn(RELIABLE_N, DIM, generator=g)
    features = torch.nn.functional.normalize(features, dim=1)
    logits = 12 * torch.nn.functional.one_hot(truth, CLUSTERS).float() + 2 * torch.randn(RELIABLE_N, CLUSTERS,
                                                                                         generator=g)
    features, probabilities = features.to(device), logits.softmax(1).to(device)
    start = clock(device)
    chosen = reliable_samples(features, probabilities, torch.Generator().manual_seed(0), RELIABLE_K)
    seconds = clock(device) - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 2**10
    return {"seconds": seconds, "peak_gb": peak / 2**30, "reliable": len(chosen.indices),
            "embeddings_gb": features.numel() * 4 / 2**30}


def reliable_times(device: torch.device) -> dict[str, float | int]:
    done = subprocess.run([sys.executable, __file__, "--reliable-worker", "--device", str(device)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(result: dict) -> str:
    steps, pseudo, rel = result["steps_ms"], result["pseudo_labels_ms"], result["reliable"]
    ratio, speedup = steps["moco"] / steps["cross-entropy"], pseudo["loop"] / pseudo["vectorised"]
    return "\n".join([
        (f"{result['machine']}, {result['threads']} threads, torch {result['torch']}; medians of {result['repeats']} "
        "interleaved rounds"), "",
        "| part | weakdml | reference | ratio | target |", "|---|---|---|---|---|",
        (f"| MoCo v2 step vs cross-entropy step (small-cnn, batch {STEP_BATCH}, augmentation included) | "
        f"{steps['moco']:.1f} ms | {steps['cross-entropy']:.1f} ms | {ratio:.2f}× | ≤ {TARGET_STEP}×: "
        f"{'yes' if ratio <= TARGET_STEP else 'no'} |"),
        (f"| SPICE-Self pseudo-labels, {BIG_BATCH:,} images × {HEADS} heads × {CLUSTERS} clusters, {DIM}-d, vs a "
        f"loop with the original's structure (same selection: {'yes' if pseudo['same'] else 'no'}) | "
        f"{pseudo['vectorised']:.1f} ms | {pseudo['loop']:.1f} ms | {speedup:.1f}× faster | ≥ {TARGET_PSEUDO}×: "
        f"{'yes' if speedup >= TARGET_PSEUDO else 'no'} |"),
        (f"| reliable samples over {RELIABLE_N:,} × {DIM}-d embeddings, k {RELIABLE_K} (fresh process) | "
        f"{rel['seconds']:.1f} s, peak {rel['peak_gb']:.2f} GB (embeddings {rel['embeddings_gb']:.2f} GB), "
        f"{rel['reliable']:,} reliable | | | |"), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--reliable-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.reliable_worker:
        print(json.dumps(reliable_worker(device)))
        return
    result = {"machine": machine(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "repeats": args.repeats, "steps_ms": step_times(args.repeats, device),
              "pseudo_labels_ms": pseudo_label_times(args.repeats, device), "reliable": reliable_times(device)}
    save(args.out, result_name("spice_stages", device), result, markdown(result))


if __name__ == "__main__":
    main()
