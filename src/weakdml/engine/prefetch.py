"""Loading ahead: the next items are prepared in a background thread while the current one is used (image decoding,
memory-map reads and host-to-device copies release the GIL)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")


def prefetched(items: Iterable[T], load: Callable[[T], U], depth: int = 2) -> Iterator[U]:
    """``load(item)`` for each item in order, with up to ``depth`` items loaded ahead."""
    if depth <= 0:
        yield from map(load, items)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="weakdml-prefetch") as pool:
        pending = []
        for item in items:
            pending.append(pool.submit(load, item))
            if len(pending) > depth:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()
