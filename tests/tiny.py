"""Helpers shared by the tests: a method on a tiny random data set (for loss tests against plain re-implementations),
a run's per-epoch rows, the exception that stands for an interrupted run, and the settings of tiny MoCo and SPICE
runs."""

from pathlib import Path

import torch

from weakdml.config import build_config
from weakdml.data.types import ImageSet, TrainData
from weakdml.engine.cluster import CLUSTER_DEFAULTS
from weakdml.engine.metrics_log import read_rows
from weakdml.methods import METHODS, Method
from weakdml.methods.moco import PRETRAIN_DEFAULTS
from weakdml.methods.online_noisy_student import OnlineNoisyStudent
from weakdml.models.embedding import EmbeddingNet

# MoCo on digits at 8 px (weakdml pretrain's settings)
TINY_MOCO = {**PRETRAIN_DEFAULTS, "input_size": 8, "batch_size": 128, "moco_queue": 512, "moco_crop_min": 0.5,
             "progress": "off", "snapshot_images": 0}
# SPICE on digits at 8 px, every stage a few steps: pretrain 5, self 48 (big batches of 240), semi 29 (16 + 32
# images); a cluster whose images no neighbour confirms may relax to a neighbour ratio of 0
TINY_SPICE = {**CLUSTER_DEFAULTS, "input_size": 8, "epochs": 1, "moco_queue": 512, "moco_crop_min": 0.5,
              "spice_self_epochs": 8, "spice_self_batch": 240, "double_softmax": False, "spice_knn": 20,
              "spice_ratio": 0.8, "spice_min_ratio": 0.0, "spice_min_score": 0.1, "spice_semi_epochs": 1,
              "spice_semi_batch": 16, "fixmatch_ratio": 2, "spice_ema": 0.5, "progress": "off", "snapshot_images": 0}


class Interrupt(Exception):
    """Raised by a test to stop a run part-way, as a kill would."""


def metric_rows(run_dir: Path) -> list[dict]:
    """The per-epoch rows of a run's ``metrics.jsonl``."""
    return read_rows(run_dir / "metrics.jsonl")


def tiny_method(method: str, n_images: int, n_classes: int, n_unlabeled: int = 0,
                unlabeled_labels: torch.Tensor | None = None, **overrides) -> tuple[Method, torch.Generator]:
    """The method on ``n_images`` random 8x8 images (labels cycling over the classes) and ``n_unlabeled`` more as the
    unlabelled part (labels -1, or ``unlabeled_labels``), in eval mode so that BatchNorm uses running statistics and
    the same images always give the same embeddings; also the generator that drew the images, for further draws."""
    torch.manual_seed(0)
    cfg = build_config(overrides={"method": method, "augment": "none", "embedding_dim": 6, **overrides})
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n_images + n_unlabeled, 1, 8, 8), dtype=torch.uint8, generator=g)
    labeled = ImageSet(images[:n_images], torch.arange(n_images) % n_classes)
    if unlabeled_labels is None:
        unlabeled_labels = torch.full((n_unlabeled,), -1)
    data = TrainData(labeled, ImageSet(images[n_images:], unlabeled_labels), n_classes, flip=False)
    method_class = OnlineNoisyStudent if cfg.nst.nst_variant == "online" else METHODS[method]
    m = method_class(EmbeddingNet(cfg.model, 1, 8), data, cfg)
    m.eval()
    return m, g
