"""``weakdml embed RUN_DIR``: the pooled, L2-normalised backbone features of every image of the run's data set (or
of another one), with the images' ids, for use outside weakdml (``embeddings.npy`` (N, F) float32 and ``ids.txt``,
one id a line: ``train/<index>``, ``test/<index>``, ``unlabeled/<index>``, or a folder's file paths)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from weakdml.atomic import atomic_writer, write_text_atomic
from weakdml.data.augment import eval_view
from weakdml.data.prepare import load_bundle
from weakdml.data.sources import ImageSource
from weakdml.engine import dist, run
from weakdml.engine.pipeline import pipeline_for
from weakdml.errors import UserError
from weakdml.methods.base import Method


@torch.no_grad()
def pooled_features(method: Method, source: ImageSource, crop: int | None) -> torch.Tensor:
    """(N, F) L2-normalised pooled backbone features of a source's images, seen as test images are (the centre
    ``crop``), by the network the method evaluates; under torchrun each process embeds its share, all get all."""
    network, was_training = method.evaluated_network(), method.training
    method.eval()
    index, bs = dist.shard(torch.arange(len(source))), method.cfg.train.eval_batch_size
    out = [F.normalize(network.features(eval_view(source.load(index[i:i + bs]).to(method.device), crop)), dim=1)
           for i in range(0, len(index), bs)]
    method.train(was_training)
    width = getattr(network.projection, "in_features", network.dim)  # the pooled features' (no projection: dim)
    return dist.gather(torch.cat(out) if out else torch.zeros(0, width, device=method.device)).cpu()


def embed_run(run_dir: Path, out: Path | None = None, dataset: str | None = None, data_root: str | None = None,
              device: str = "auto", stage: str | None = None) -> tuple[Path, int]:
    """Write the embeddings of the run's data set (or ``dataset``, read from ``data_root``) into ``out`` (default:
    the run directory, or the stage's), by the run's model or that of its finished ``stage``; returns the folder and
    the number of images."""
    cfg, data, method, _ = run.load_run(run_dir, device, stage=stage)
    if out is None and stage is not None:
        pipeline = pipeline_for(cfg)
        out = pipeline.directory(run_dir, run.finished_trained_stage(pipeline, run_dir, stage))
    bundle = data.bundle
    if dataset is not None:
        bundle = load_bundle(dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, dataset=dataset, data_root=data_root, train_dir=None, test_dir=None, class_disjoint=False,
            train_classes=[])))
        if bundle.channels != data.bundle.channels:
            raise UserError(f"{dataset} has {bundle.channels}-channel images, the run's network takes "
                            f"{data.bundle.channels}")
    parts = [("train", bundle.train), ("test", bundle.test), ("unlabeled", bundle.unlabeled)]
    features, ids = [], []
    for name, source in parts:
        if source is None or len(source) == 0:
            continue
        features.append(pooled_features(method, source, bundle.crop))
        names = bundle.train_ids if name == "train" else None
        ids += names or [f"{name}/{i}" for i in range(len(source))]
    out = out or run_dir
    if not dist.is_main():  # every process embedded its share; rank 0 writes
        return out, len(ids)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_writer(out / "embeddings.npy", "wb") as handle:
        np.save(handle, torch.cat(features).numpy().astype(np.float32))
    write_text_atomic(out / "ids.txt", "".join(f"{i}\n" for i in ids))
    return out, len(ids)
