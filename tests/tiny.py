"""Helpers shared by the tests: a method on a tiny random data set (for loss tests against plain re-implementations),
a run's per-epoch rows, and the exception that stands for an interrupted run."""

from pathlib import Path

import torch

from weakdml.config import build_config
from weakdml.data.types import ImageSet, TrainData
from weakdml.engine.metrics_log import read_rows
from weakdml.methods import METHODS, Method
from weakdml.methods.online_noisy_student import OnlineNoisyStudent
from weakdml.models.embedding import EmbeddingNet


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
