"""Class-balanced batches for metric learning: P classes × M images each, drawn with a seeded torch generator.

pytorch-metric-learning's ``MPerClassSampler`` draws with numpy's global random state, which a resumed run cannot
restore per epoch; this sampler takes every random choice from the generator it is given, so an epoch's batches
depend only on (seed, epoch). Classes and the images of each class are visited in random order without repeats
until all have been used, then reshuffled: every class (and every image of a class) appears equally often, give or
take one, and a class with fewer than M images repeats its images within a batch (sampling with replacement).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from weakdml.errors import UserError


class CyclicPermutation:
    """Draws items in a random order without repeats; when all are used, a fresh random order starts."""

    def __init__(self, items: torch.Tensor, generator: torch.Generator) -> None:
        self.items = items
        self.generator = generator
        self.queue = items[:0]

    def take(self, k: int) -> torch.Tensor:
        """The next k items; none repeats within one call unless k exceeds the number of items."""
        taken = self.items[:0]
        while len(taken) < k:
            if len(self.queue) == 0:
                order = self.items[torch.randperm(len(self.items), generator=self.generator)]
                repeated = torch.isin(order, taken)  # put this call's items last, so they repeat only if they must
                self.queue = torch.cat([order[~repeated], order[repeated]])
            part, self.queue = self.queue[:k - len(taken)], self.queue[k - len(taken):]
            taken = torch.cat([taken, part])
        return taken


def batch_shape(num_classes: int, batch_size: int, m_per_class: int) -> tuple[int, int]:
    """(classes per batch P, images per class M): P = batch_size // m and M = m; with fewer than P classes, every
    class is in each batch with batch_size // num_classes images. Raises UserError when a batch holds < 2 classes."""
    classes = min(batch_size // m_per_class, num_classes)
    if classes < 2:
        raise UserError(f"a batch of {batch_size} with --m-per-class {m_per_class} holds fewer than 2 of the "
                        f"{num_classes} classes; use a batch size of at least {2 * m_per_class} (and ≥ 2 classes)")
    per_class = m_per_class if classes == batch_size // m_per_class else batch_size // classes
    return classes, per_class


def m_per_class_batches(labels: torch.Tensor, batch_size: int, m_per_class: int,
                        generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches (P·M,) into ``labels``, grouped by class; an epoch has ceil(N / (P·M)) batches, so it draws about
    as many images as there are (all of them once when the classes are balanced and P·M divides N)."""
    classes = labels.unique()
    p, m = batch_shape(len(classes), batch_size, m_per_class)
    class_order = CyclicPermutation(classes, generator)
    image_orders = {int(c): CyclicPermutation(torch.nonzero(labels == c).flatten(), generator) for c in classes}
    for _ in range(-(-len(labels) // (p * m))):
        yield torch.cat([image_orders[int(c)].take(m) for c in class_order.take(p)])
