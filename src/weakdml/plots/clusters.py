"""A picture of a clustering for people to look at: one row per cluster, its most confident images left to right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from weakdml.atomic import atomic_writer
from weakdml.data.sources import ImageSource

GAP = 2  # pixels between images, white


def cluster_grid(source: ImageSource, clusters: torch.Tensor, confidence: torch.Tensor, num_clusters: int,
                 path: Path, per_cluster: int = 10, side: int = 48) -> None:
    """Write a PNG with row c holding cluster c's ``per_cluster`` most confident images (``clusters`` and
    ``confidence`` (N,) per image of ``source``), each scaled to ``side`` pixels; an empty place stays white."""
    grid = np.full((num_clusters * (side + GAP), per_cluster * (side + GAP), 3), 255, dtype=np.uint8)
    for c in range(num_clusters):
        members = torch.nonzero(clusters == c).flatten()
        best = members[confidence[members].argsort(descending=True)[:per_cluster]]
        images = source.load(best) if len(best) else torch.zeros(0, 3, 1, 1, dtype=torch.uint8)  # (k, C, H, W)
        for j, image in enumerate(images):
            rgb = image.expand(3, -1, -1).permute(1, 2, 0).numpy()  # (H, W, 3)
            tile = np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.NEAREST))
            top, left = c * (side + GAP), j * (side + GAP)
            grid[top:top + side, left:left + side] = tile
    with atomic_writer(path, "wb") as handle:
        Image.fromarray(grid).save(handle, format="PNG")
