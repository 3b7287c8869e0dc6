"""Image sources at scale: the cache's build rate, batch-read rates (cache, memory, files) and the peak resident memory
of one epoch over a synthetic folder of JPEGs (default 120,000 images, cached at 3×256×256: 23.6 GB on disk).

    python benchmarks/data_sources.py [--images 120000] [--size 256] [--folder /work/scratch/sources/synth]
        [--cache-dir FOLDER.cache] [--workers CORES] [--read-batches 40] [--out benchmarks/results] [--keep-cache]

The folder is generated once (in parallel; crops of smooth random colours with noise, --size square, ~15 KB each)
and reused while its manifest matches; its images need no resize, so larger files would cache slower. Each
measurement runs in a fresh process, so that its peak memory is its own: the build (``build_cache`` over --workers
processes); random batches of 128 read from the cache, from an in-memory tensor (the first 8,192 images, a subset that
fits) and from the files by ``load_batches`` with 2 worker processes; one epoch in random order through
``load_batches`` from the cache, each batch converted to float as training would. Memory: VmHWM of the measuring
process (exact) and the largest sum of VmRSS over it and its descendants (sampled every 0.2 s; shared library pages
count once per process, so an upper bound). Writes data_sources.json and .md; deletes the cache unless --keep-cache.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from weakdml.data.loader import load_batches
from weakdml.data.sources import CachedSource, FileSource, ImageSet, build_cache

BATCH = 128
IN_MEMORY = 8192  # images of the in-memory source (1.6 GB at 3×256×256)
PER_FOLDER = 1000  # images per class folder of the synthetic data


_BANK: list[np.ndarray] = []  # per generating process: large random images that synthetic ones are cut from


def synthetic_image(task: tuple[Path, int, int]) -> None:
    """One random-looking size × size JPEG: a crop of a smooth random colour field with noise (one of 16 made once per
    process, twice the side), at a random place, with a random colour shift, so that every file differs."""
    path, index, size = task
    if not _BANK:
        rng = np.random.default_rng(os.getpid())
        for _ in range(16):
            field = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((2 * size, 2 * size),
                                                                                           Image.Resampling.BICUBIC)
            noise = rng.integers(-8, 9, (2 * size, 2 * size, 3), dtype=np.int16)
            _BANK.append((np.asarray(field, dtype=np.int16) + noise).clip(0, 255).astype(np.uint8))
    rng = np.random.default_rng(index)
    bank, y, x = int(rng.integers(len(_BANK))), *(int(v) for v in rng.integers(0, size, 2))
    crop = _BANK[bank][y : y + size, x : x + size] + rng.integers(0, 256, 3, dtype=np.uint8)  # wraps: sharp edges
    Image.fromarray(crop).save(path, quality=90)


def synthetic_folder(folder: Path, images: int, size: int, workers: int) -> tuple[list[Path], torch.Tensor, dict]:
    """The paths and labels (class = folder) of the synthetic images, generated unless the manifest says that the
    folder holds at least as many of that size (then the first ``images`` are used)."""
    paths = [folder / f"{i // PER_FOLDER:04d}" / f"{i:07d}.jpg" for i in range(images)]
    labels = torch.arange(images) // PER_FOLDER
    manifest = folder / "manifest.json"
    wanted = {"images": images, "size": size}
    if manifest.is_file():
        found = json.loads(manifest.read_text())
        if found["size"] == size and found["images"] >= images:
            return paths, labels, {"generated": False}
    shutil.rmtree(folder, ignore_errors=True)
    for sub in {p.parent for p in paths}:
        sub.mkdir(parents=True)
    start = time.perf_counter()
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        pool.map(synthetic_image, [(p, i, size) for i, p in enumerate(paths)], chunksize=256)
    seconds = time.perf_counter() - start
    manifest.write_text(json.dumps(wanted))
    megabytes = sum(p.stat().st_size for p in paths) / 1e6
    return paths, labels, {"generated": True, "seconds": seconds, "folder_mb": megabytes}


def tree_rss_mb() -> float:
    """VmRSS summed over this process and its descendants (found through the parent ids in /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry.name)] = int(fields["PPid"])
        rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0])
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    return sum(rss.get(pid, 0) for pid in tree) / 1024


def own_peak_mb() -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def measured(work: Callable[[], dict]) -> dict:
    """``work()``'s result with this process's peak memory and the sampled peak of its process tree."""
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], tree_rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = work()
    done.set()
    sampler.join()
    return {**result, "process_peak_mb": own_peak_mb(), "tree_peak_mb": max(peak[0], tree_rss_mb())}


def random_batches(n: int, count: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, n, (BATCH,), generator=g) for _ in range(count)]


def rate(images: int, seconds: float) -> dict:
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds}


def phase_build(paths: list[Path], labels: torch.Tensor, shape: tuple, cache_dir: str, workers: int) -> dict:
    def work() -> dict:
        start = time.perf_counter()
        build_cache(paths, labels, shape, Path(cache_dir), workers=workers)
        return rate(len(paths), time.perf_counter() - start)
    return measured(work)


def phase_read(kind: str, cache: CachedSource, paths: list[Path], count: int) -> dict:
    """Random batches read from the cache, from the first IN_MEMORY images in memory, or decoded from the files by
    two loader workers."""
    if kind == "memory":
        source = ImageSet(cache.load(torch.arange(min(IN_MEMORY, len(cache)))), cache.labels[:IN_MEMORY])
    else:
        source = cache if kind == "cache" else FileSource(paths, cache.labels, cache.shape)
    batches = random_batches(len(source), count, seed=len(kind))

    def work() -> dict:
        start = time.perf_counter()
        if kind == "files, 2 workers":
            images = sum(len(images) for _, images in load_batches(source, batches, workers=2))
        else:
            images = sum(len(source.load(b)) for b in batches)
        return rate(images, time.perf_counter() - start)
    return measured(work)


def phase_epoch(cache: CachedSource) -> dict:
    def work() -> dict:
        order = torch.randperm(len(cache), generator=torch.Generator().manual_seed(4))
        total, start = 0.0, time.perf_counter()
        for _, images in load_batches(cache, order.split(BATCH), workers=0, prefetch=2):
            total += float(images.float().div_(255).mean())  # as training would: the batch as float
        return {**rate(len(cache), time.perf_counter() - start), "mean_of_batch_means": total / math.ceil(
            len(cache) / BATCH)}
    return measured(work)


def in_fresh_process(function: Callable, *args) -> dict:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def table(r: dict) -> str:
    def row(name: str, m: dict) -> str:
        return (f"| {name} | {m['images']:,} | {m['seconds']:.1f} | {m['images_per_s']:,.0f} | "
                f"{m['process_peak_mb']:,.0f} | {m['tree_peak_mb']:,.0f} |")
    lines = ["| measurement | images | s | images / s | peak RSS, process (MB) | peak RSS, process tree (MB) |",
             "|---|---|---|---|---|---|",
             row(f"cache build ({r['build_workers']} processes)", r["build"])]
    lines += [row(f"random batches of {BATCH}: {name}", m) for name, m in r["reads"].items()]
    lines.append(row(f"epoch from the cache (load_batches, batches of {BATCH} to float)", r["epoch"]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--folder", default="/work/scratch/sources/synth")
    parser.add_argument("--cache-dir", default=None, help="default: FOLDER.cache")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes that generate and cache")
    parser.add_argument("--read-batches", type=int, default=40, help="random batches per read-rate measurement")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--keep-cache", action="store_true")
    parser.add_argument("--note", default="", help="a line to keep with the results (e.g. that the machine was busy)")
    args = parser.parse_args()
    folder = Path(args.folder)
    cache_dir = Path(args.cache_dir or f"{folder}.cache")
    shape = (3, args.size, args.size)
    paths, labels, generation = synthetic_folder(folder, args.images, args.size, args.workers)
    shutil.rmtree(cache_dir, ignore_errors=True)  # the build is measured from nothing
    try:
        build = in_fresh_process(phase_build, paths, labels, shape, str(cache_dir), args.workers)
        cache = build_cache(paths, labels, shape, cache_dir)  # the cache just built: nothing is decoded
        reads = {kind: in_fresh_process(phase_read, kind, cache, paths, args.read_batches)
                 for kind in ("cache", "memory", "files, 2 workers")}
        epoch = in_fresh_process(phase_epoch, cache)
    finally:
        if not args.keep_cache:
            shutil.rmtree(cache_dir, ignore_errors=True)
    result = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "images": args.images,
              "shape": shape, "cache_gb": args.images * math.prod(shape) / 1e9, "build_workers": args.workers,
              "batch": BATCH, "read_batches": args.read_batches, "generation": generation, "build": build,
              "reads": reads, "epoch": epoch, "note": args.note}
    setting = (f"{args.images:,} synthetic JPEGs cached at {'×'.join(map(str, shape))} ({result['cache_gb']:.1f} GB; "
               f"one tensor would need as much memory), {os.cpu_count()} cores, {torch.get_num_threads()} torch "
               f"threads, torch {torch.__version__}; read rates over {args.read_batches} random batches of {BATCH} "
               f"(memory: the first {min(IN_MEMORY, args.images):,} images)")
    text = f"{setting}\n\n{table(result)}\n" + (f"\n{args.note}\n" if args.note else "")
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_sources.json").write_text(json.dumps(result, indent=2))
    (out / "data_sources.md").write_text(text)


if __name__ == "__main__":
    main()
