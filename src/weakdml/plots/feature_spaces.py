"""The MbDML paper's four feature spaces of a trained NNGK-based run, as one 2×2 figure:
(a) backbone features of test images, (b) the same images in the Gaussian-kernel space (their NNGK class
probabilities), (c) backbone features with mixup samples, (d) the kernel space with mixup samples.

Each space is projected once, clean and mixed samples together, so (a)/(c) and (b)/(d) share their coordinates.
Kernel spaces with at most 3 classes are drawn as they are (points of the probability simplex), larger ones by t-SNE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from weakdml.methods.base import Method
from weakdml.plots.style import blank_axes, class_legend, plt, save, scatter_classes
from weakdml.plots.tsne import subsample, tsne_2d

MAX_CLEAN = 500


@dataclass
class FeatureSpaces:
    """Backbone features (N + M, F) and kernel class probabilities (N + M, C) of N clean test images (first) and
    M mixup samples (last); labels (N,) of the clean ones."""

    backbone: np.ndarray
    kernel: np.ndarray
    labels: np.ndarray

    @property
    def num_clean(self) -> int:
        return len(self.labels)


@torch.no_grad()
def compute_feature_spaces(method: Method, images: torch.Tensor, labels: torch.Tensor, num_mixup: int | None = None,
                           seed: int = 0) -> FeatureSpaces:
    """Features of uint8 images (N, C, H, W) and of ``num_mixup`` (default N/2) mixes of random pairs of them,
    with λ ~ Beta(1, 1) drawn per pair; ``method`` must have an NNGK ``head``."""
    head = getattr(method, "head", None)
    if head is None:
        raise ValueError(f"{type(method).__name__} has no NNGK head: the kernel spaces need an NNGK-based method")
    generator = torch.Generator().manual_seed(seed)
    x = images.float() / 255
    m = len(x) // 2 if num_mixup is None else num_mixup
    first, second = torch.randint(len(x), (m,), generator=generator), torch.randint(len(x), (m,), generator=generator)
    lam = torch.from_numpy(np.random.default_rng(seed).beta(1.0, 1.0, m)).float().view(m, 1, 1, 1)
    x = torch.cat([x, lam * x[first] + (1 - lam) * x[second]])  # clean (N), then mixed (M)
    method.eval()
    backbone, kernel = [], []
    for chunk in x.split(method.cfg.train.eval_batch_size):
        chunk = chunk.to(method.device)
        features = method.model.features(chunk)
        backbone.append(features.cpu())
        kernel.append(head.query_log_scores(method.model(chunk)).softmax(1).cpu())
    return FeatureSpaces(torch.cat(backbone).numpy(), torch.cat(kernel).numpy(), labels.numpy())


SIMPLEX_CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])


def simplex_2d(probabilities: np.ndarray) -> np.ndarray:
    """Points of the 2- or 3-class probability simplex (N, C ≤ 3) as 2-D coordinates: the classes are the corners
    of a triangle (for 2 classes, the ends of a segment of the x axis)."""
    return probabilities @ SIMPLEX_CORNERS[: probabilities.shape[1]]


def plot_feature_spaces(spaces: FeatureSpaces, class_names: list[str], path: Path, title: str = "",
                        seed: int = 0) -> Path:
    """Write the 2×2 figure of the four feature spaces."""
    n = spaces.num_clean
    backbone = tsne_2d(spaces.backbone, seed)
    small = spaces.kernel.shape[1] <= 3
    kernel = simplex_2d(spaces.kernel) if small else tsne_2d(spaces.kernel, seed)
    fig, axes = plt.subplots(2, 2, figsize=(11, 10))
    panels = [(backbone, "(a) backbone features", False), (kernel, "(b) Gaussian-kernel (NNGK) space", False),
              (backbone, "(c) backbone features + mixup", True), (kernel, "(d) NNGK + mixup", True)]
    for ax, (xy, name, with_mixup), is_kernel in zip(axes.flat, panels, (False, True, False, True)):
        if with_mixup:
            ax.scatter(xy[n:, 0], xy[n:, 1], s=14, marker="x", color="0.45", alpha=0.7, linewidths=0.8,
                       label="mixup, λ ~ Beta(1,1)")
        scatter_classes(ax, xy[:n], spaces.labels, class_names, size=12)
        if is_kernel and small:
            blank_axes(ax, "class probabilities (simplex)", "")
            for corner, name in zip(SIMPLEX_CORNERS, class_names):
                ax.annotate(name, corner, ha="center", va="bottom", fontsize=11)
        else:
            blank_axes(ax)
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    class_legend(fig, axes[1, 1], len(class_names))
    return save(fig, path)


def feature_space_figure(method: Method, images: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                         path: Path, title: str = "", seed: int = 0) -> Path:
    """Compute the spaces of up to MAX_CLEAN of the images (seeded subsample) and write their figure."""
    keep = torch.from_numpy(subsample(len(images), MAX_CLEAN, seed))
    spaces = compute_feature_spaces(method, images[keep], labels[keep], seed=seed)
    return plot_feature_spaces(spaces, class_names, path, title, seed)
