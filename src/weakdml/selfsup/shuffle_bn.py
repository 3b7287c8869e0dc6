"""Shuffle-BN (MoCo) on one device: the key encoder sees the batch in shuffled groups, BatchNorm statistics per group.

With several GPUs MoCo shuffles the key batch across them, so a query and its key are normalised with statistics of
different sub-batches and the model cannot find the positive through the batch statistics. On one device the same
effect comes from running the key encoder on G random groups of the batch separately (BatchNorm in train mode
normalises each with its own mean and variance) and putting the outputs back in the batch's order. With several
processes, each encodes its share of the groups of the global batch and the outputs are gathered: the same groups,
so the same keys, as one process encoding them all.
"""

from __future__ import annotations

import torch
from torch import nn

from weakdml.engine import dist
from weakdml.errors import UserError


def shuffle_bn_forward(encoder: nn.Module, images: torch.Tensor, groups: int, generator: torch.Generator
                       ) -> torch.Tensor:
    """``encoder`` applied to a random permutation of ``images`` (B, ...) in ``groups`` chunks, one forward pass each,
    returned in the original order (B, ...). The running statistics are updated once per group. ``images`` is the
    global batch: every process gives all of it and encodes its share of the groups."""
    if not 1 <= groups <= len(images):
        raise UserError(f"shuffle-BN needs between 1 and the batch size ({len(images)}) groups, got {groups}")
    if groups < dist.world_size():
        raise UserError(f"shuffle-BN needs at least one group per process: --shuffle-groups {groups} with "
                        f"{dist.world_size()} processes; raise --shuffle-groups")
    permutation = torch.randperm(len(images), generator=generator).to(images.device)
    chunks = images[permutation].tensor_split(groups)[dist.rows(groups)]
    shuffled = dist.gather(torch.cat([encoder(chunk) for chunk in chunks]))
    out = torch.empty_like(shuffled)
    out[permutation] = shuffled  # row permutation[i] of the batch was row i of the shuffled batch
    return out
