"""Copies from the host that do not make it wait for the GPU.

Data order and augmentation are drawn on the CPU from seeded generators (the same draws on every machine). Sending
such a draw to a GPU with a plain ``.to(device)`` copies from pageable memory and then waits until every job queued on
the GPU has finished, so the host cannot prepare the next step while the GPU computes this one. These copies go
through pinned memory without waiting, and the choice of rows an operation applies to is made on the host, where
the draws are, instead of testing a mask on the GPU (``if mask.any()``) and indexing with it.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (on the CPU) on ``device``; to a GPU through pinned memory, without waiting for the GPU."""
    if device.type != "cuda" or tensor.is_cuda:
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def chosen_rows(mask: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The positions of a CPU mask's True rows (ascending, as boolean indexing takes them) on ``device``, or None
    when there are none."""
    positions = mask.nonzero().squeeze(1)
    return to_device(positions, device) if len(positions) else None
