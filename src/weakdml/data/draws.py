"""Per-image random draws that do not depend on how a batch is split over processes.

A global batch of ``total`` images may be spread over several processes, each holding contiguous ``rows`` of it. Every
per-image draw is made for the whole batch from the epoch's generator (which every process seeds alike) and only the
process's rows are kept: an image's augmentation is the same whatever the number of processes, and with one process
the draws are those of plain ``torch.rand(total, generator=...)`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rows:
    """Rows ``part`` of a global batch of ``total`` images (a slice, or positions (B,)): what one process holds."""

    total: int
    part: slice | torch.Tensor

    def __len__(self) -> int:
        return len(range(*self.part.indices(self.total))) if isinstance(self.part, slice) else len(self.part)

    def positions(self) -> torch.Tensor:
        """The rows as positions in the global batch (B,)."""
        return torch.arange(self.total)[self.part]


@dataclass(frozen=True)
class Draws:
    generator: torch.Generator
    total: int  # images in the global batch
    rows: slice | torch.Tensor  # this process's rows of it

    @staticmethod
    def of(source: Draws | torch.Generator, images: int, rows: Rows | None = None) -> Draws:
        """``source`` as it is, or draws from a generator for ``images`` images: all of a batch, or its ``rows``."""
        if isinstance(source, Draws):
            return source
        if rows is None:
            return Draws(source, images, slice(0, images))
        assert len(rows) == images, "rows do not match the images"
        return Draws(source, rows.total, rows.part)

    def __len__(self) -> int:
        return len(Rows(self.total, self.rows))

    def rand(self, *tail: int) -> torch.Tensor:
        """Uniform [0, 1) values (rows, *tail)."""
        return torch.rand(self.total, *tail, generator=self.generator)[self.rows]

    def randint(self, high: int) -> torch.Tensor:
        """Integers in [0, high), one per row."""
        return torch.randint(0, high, (self.total,), generator=self.generator)[self.rows]

    def uniform(self, low: float, high: float, *tail: int) -> torch.Tensor:
        """Uniform [low, high) values (rows, *tail), as ``Tensor.uniform_``."""
        return torch.empty(self.total, *tail).uniform_(low, high, generator=self.generator)[self.rows]
