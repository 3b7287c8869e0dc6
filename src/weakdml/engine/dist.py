"""torch.distributed in a few functions (in the spirit of lightly's ``utils/dist.py``): who am I, how many are we,
my rows of a global batch, a gather that keeps gradients, and writes by rank 0 only. Without an initialised process
group everything is the single-process identity, so the engine calls these unconditionally.

A run launched by ``torchrun`` (its ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and rendezvous variables) joins the
process group in ``start``: NCCL on CUDA, gloo on the CPU, one GPU per process (``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn

from weakdml.errors import FailedOnAnotherRank, UserError

T = TypeVar("T")
TIMEOUT = datetime.timedelta(minutes=30)  # a collective that waits longer than this ends the run with an error


def world_size() -> int:
    return torch_dist.get_world_size() if torch_dist.is_available() and torch_dist.is_initialized() else 1


def rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_available() and torch_dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0 writes checkpoints, logs and tables, and shows progress."""
    return rank() == 0


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun), before the group is joined."""
    return int(os.environ.get("RANK", "0"))


def start(device_name: str) -> str:
    """Join torchrun's process group when there is one (``WORLD_SIZE`` > 1) and it is not joined yet; returns the
    device this process works on: ``cuda:LOCAL_RANK`` for ``auto``/``cuda`` with CUDA, else ``device_name`` as given
    (``cpu`` under torchrun). Commands that load a finished run (evaluate, embed, a clustering's outputs) call it
    too."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device_name
    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name.startswith("cuda") and not cuda:
        raise UserError(f"--device {device_name} with torchrun: give --device auto or cuda (one GPU per process, "
                        f"cuda:LOCAL_RANK) or cpu")
    if device_name == "mps":
        raise UserError("--device mps cannot be shared by several processes; use --device cpu with torchrun")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch_dist.is_initialized():
        if cuda:
            if local >= torch.cuda.device_count():
                raise UserError(f"torchrun started local rank {local} but this machine has "
                                f"{torch.cuda.device_count()} GPU(s): give --nproc-per-node at most that")
            torch.cuda.set_device(local)
        try:
            torch_dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
        except (RuntimeError, ValueError) as error:
            raise UserError(f"could not join torchrun's process group ({error}); check MASTER_ADDR/MASTER_PORT or "
                            f"--rdzv-endpoint and that every node started") from None
    return f"cuda:{local}" if cuda else "cpu"


def stop(together: bool) -> None:
    """Leave the process group. ``together``: this rank's command finished, so it waits for the others first and
    none closes its connections while another still reads from them (gloo aborts the reading process then)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        if together:
            try:
                barrier()
            except RuntimeError:  # another rank failed after its last collective: it reports that itself
                pass
        torch_dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read)."""
    if world_size() > 1:
        torch_dist.barrier()


def rows(total: int) -> slice:
    """This rank's rows of a global batch of ``total``: the contiguous slice ``tensor_split`` gives it, so that the
    global batch (and so the result) does not depend on the number of processes."""
    n, r = world_size(), rank()
    per, extra = divmod(total, n)
    start = r * per + min(r, extra)
    return slice(start, start + per + (r < extra))


def shard(global_batch: torch.Tensor) -> torch.Tensor:
    """This rank's share of a global batch (its ``rows``)."""
    return global_batch[rows(len(global_batch))]


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over the ranks (a new tensor; the input is left as it is)."""
    if world_size() == 1:
        return tensor
    total = tensor.clone()
    torch_dist.all_reduce(total)
    return total


def computed_once(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0 alone, its picklable result (numbers, or tensors on the CPU) sent to every rank: for
    work whose inputs every rank holds alike, such as metrics of gathered embeddings. Every rank must call it alike.
    If rank 0 fails, it raises its error and every other rank ``FailedOnAnotherRank`` (none waits for a result that
    will not come)."""
    if world_size() == 1:
        return compute()
    box: list[object] = [None]
    failure: BaseException | None = None
    if is_main():
        try:
            box[0] = ("ok", compute())
        except BaseException as error:  # noqa: BLE001 - told to the others first, then raised here
            failure, box[0] = error, ("failed", str(error))
    torch_dist.broadcast_object_list(box, src=0)
    if failure is not None:
        raise failure
    status, value = box[0]  # type: ignore[misc]
    if status == "failed":
        raise FailedOnAnotherRank(f"rank 0 failed: {value}")
    return value  # type: ignore[return-value]


def _sizes(tensor: torch.Tensor) -> list[int]:
    size = torch.tensor([len(tensor)], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    torch_dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def _padded(tensor: torch.Tensor, length: int) -> torch.Tensor:
    return torch.cat([tensor, tensor.new_zeros(length - len(tensor), *tensor.shape[1:])])


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        sizes = _sizes(tensor)
        ctx.sizes = sizes
        parts = [tensor.new_empty(max(sizes), *tensor.shape[1:]) for _ in sizes]
        torch_dist.all_gather(parts, _padded(tensor, max(sizes)))
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # reduced in place: not autograd's buffer
        torch_dist.all_reduce(grad)  # every rank's loss depends on every rank's rows
        start = sum(ctx.sizes[:rank()])
        return grad[start:start + ctx.sizes[rank()]]


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's (B_r, ...) tensor concatenated in rank order along dim 0 (the global batch, when each holds its
    ``rows``); gradients flow back to each rank's own rows, summed over the ranks' losses."""
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_rows(tensor: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """The global batch (N, ...) from every rank's rows ``tensor`` (B_r, ...) at ``positions`` (B_r,) of it (None:
    the rank's contiguous ``rows``, in rank order); gradients flow back as in ``gather``."""
    if world_size() == 1 and positions is None:
        return tensor
    gathered = gather(tensor)
    if positions is None:
        return gathered
    return gathered[gather(positions.to(tensor.device)).argsort()]


@torch.no_grad()
def average_batchnorm(module: nn.Module) -> None:
    """Make every rank's BatchNorm running statistics their average over the ranks (each rank's come from its own
    rows of the batches), so that evaluation, banks and checkpoints are the same on every rank."""
    if world_size() == 1:
        return
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.running_mean is not None:
            for buffer in (layer.running_mean, layer.running_var):
                torch_dist.all_reduce(buffer)
                buffer /= world_size()
