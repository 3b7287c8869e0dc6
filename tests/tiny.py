"""A method on a tiny random labelled set, for loss tests against plain re-implementations."""

import torch

from weakdml.config import build_config
from weakdml.data.types import ImageSet, TrainData
from weakdml.methods import METHODS, Method
from weakdml.models.embedding import EmbeddingNet


def tiny_method(method: str, n_images: int, n_classes: int, **overrides) -> tuple[Method, torch.Generator]:
    """The method on ``n_images`` random 8x8 images (labels cycling over the classes), in eval mode so that
    BatchNorm uses running statistics and the same images always give the same embeddings; also the generator
    that drew the images, for further draws."""
    torch.manual_seed(0)
    cfg = build_config(overrides={"method": method, "augment": "none", "embedding_dim": 6, **overrides})
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n_images, 1, 8, 8), dtype=torch.uint8, generator=g)
    labeled = ImageSet(images, torch.arange(n_images) % n_classes)
    data = TrainData(labeled, ImageSet(images[:0], labeled.labels[:0]), n_classes, flip=False)
    m = METHODS[method](EmbeddingNet(cfg.model, 1, 8), data, cfg)
    m.eval()
    return m, g
