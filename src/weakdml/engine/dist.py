"""torch.distributed in a few functions (in the spirit of lightly's ``utils/dist.py``): who am I, how many are we,
my share of a global batch, a gather that keeps gradients, and writes by rank 0 only. Without an initialised process
group everything is the single-process identity, so the engine calls these unconditionally."""

from __future__ import annotations

import torch
import torch.distributed as torch_dist


def world_size() -> int:
    return torch_dist.get_world_size() if torch_dist.is_available() and torch_dist.is_initialized() else 1


def rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_available() and torch_dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0 writes checkpoints, logs and tables, and shows progress."""
    return rank() == 0


def shard(global_batch: torch.Tensor) -> torch.Tensor:
    """This rank's share of a global batch of indices: every rank takes a contiguous slice, so that the global batch
    (and so the result) does not depend on the number of processes."""
    return global_batch.tensor_split(world_size())[rank()]


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = [torch.zeros_like(tensor) for _ in range(world_size())]
        torch_dist.all_gather(out, tensor)
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(grads)
        torch_dist.all_reduce(stacked)  # every rank's loss depends on every rank's part
        return stacked[rank()]


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's (B_r, ...) tensor along dim 0; gradients flow back to each rank's own part."""
    if world_size() == 1:
        return tensor
    return torch.cat(_GatherWithGrad.apply(tensor), 0)
