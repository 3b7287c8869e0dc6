"""Batches of images loaded ahead of their use: by a background thread, or by worker processes for sources whose
loads cost CPU (files decoded on every load), so that decoding and reading overlap the training step."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch.utils.data import DataLoader, Dataset

from weakdml.data.sources import ImageSource
from weakdml.errors import UserError

Loaded = tuple[torch.Tensor, torch.Tensor]  # (indices (B,), uint8 images (B, C, H, W))


def load_batches(
    source: ImageSource, index_batches: Iterable[torch.Tensor], workers: int = 0, prefetch: int = 2,
    device: torch.device | None = None,
) -> Iterator[Loaded]:
    """(indices, uint8 images on ``device``) for each index batch, in order, with up to ``prefetch`` batches loaded
    ahead: by one background thread (``workers=0``) or by ``workers`` processes (each holding at least one batch).

    ``index_batches`` is consumed here, in the calling thread, so a sampler's generator is drawn from in one place.
    On CUDA the batches are pinned before their (non-blocking) copy to the device.
    """
    pin = device is not None and device.type == "cuda"
    if workers:
        loaded = _in_processes(source, index_batches, workers, prefetch, pin)
    else:
        loaded = _in_thread(source, index_batches, prefetch, pin)
    for indices, images in loaded:
        yield indices, images if device is None else images.to(device, non_blocking=pin)


def _in_thread(source: ImageSource, index_batches: Iterable[torch.Tensor], prefetch: int, pin: bool
               ) -> Iterator[Loaded]:
    def load(indices: torch.Tensor) -> torch.Tensor:
        images = source.load(indices)
        return images.pin_memory() if pin else images

    batches = iter(index_batches)
    pending: deque[tuple[torch.Tensor, Future[torch.Tensor]]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="weakdml-loader") as pool:
        try:
            while True:
                while len(pending) <= prefetch and (indices := next(batches, None)) is not None:
                    pending.append((indices, pool.submit(load, indices)))
                if not pending:
                    return
                indices, future = pending.popleft()
                yield indices, future.result()
        finally:  # also when the caller stops early: batches not started are dropped
            for _, future in pending:
                future.cancel()


class _Batches(Dataset):
    """``source`` for a DataLoader whose batch sampler yields index tensors: one ``load`` per batch."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | UserError]:
        try:
            return indices, self.source.load(indices)
        except UserError as error:  # passed back as it is: DataLoader would re-raise it with a worker traceback
            return indices, error


def _as_is(batch: Loaded) -> Loaded:
    return batch


def _in_processes(source: ImageSource, index_batches: Iterable[torch.Tensor], workers: int, prefetch: int,
                  pin: bool) -> Iterator[Loaded]:
    loader = DataLoader(_Batches(source), batch_sampler=index_batches, num_workers=workers, collate_fn=_as_is,
                        pin_memory=pin, prefetch_factor=max(1, -(-prefetch // workers)))  # type: ignore[arg-type]
    for indices, images in loader:
        if isinstance(images, UserError):
            raise images
        yield indices, images
