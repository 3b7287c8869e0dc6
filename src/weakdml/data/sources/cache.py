"""A decoded copy of image files on disk: every file decoded once, in parallel, into one uint8 file (N, C, H, W) that
is read by offset, batch by batch, while the files stay unchanged.

The cache is ``<cache_dir>/<key>.u8`` with a JSON header ``<key>.json`` beside it; the key hashes the files' paths,
sizes and modification times, the shape and the format version, so that any change to them gives a new cache. The
data is written under a temporary name and the header last, so an interrupted build leaves nothing that is taken for
a cache; a new cache of the same paths and shape deletes the stale ones. Images are read with ``os.preadv`` rather
than through a memory map: the pages of a map that a process has touched count towards its resident memory (a whole
epoch would make it the size of the file), read pages do not.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from weakdml.data.images import decode_image
from weakdml.data.sources.base import checked, checked_labels
from weakdml.errors import UserError

FORMAT = "weakdml-image-cache"
VERSION = 1  # raise it whenever decode_image's output changes, so that older caches are not reused
CHUNK = 64  # images decoded and written per worker task


class CachedSource:
    """The images of a complete cache file ``<key>.u8`` (as ``build_cache`` writes it) with their labels.

    It pickles as its path and labels (the file is opened again in each process), so loader workers receive it
    cheaply; reads by offset share no file position, so forked workers may also use it as it is.
    """

    def __init__(self, path: Path, labels: torch.Tensor) -> None:
        self.path = Path(path)
        header = _complete_header(self.path)
        if header is None:
            raise ValueError(f"{self.path} is not a complete image cache (no matching header {_header_path(path)})")
        self._shape: tuple[int, int, int] = tuple(header["shape"])  # type: ignore[assignment]
        self.labels = checked_labels(labels, header["count"])
        self._file: io.FileIO | None = None  # opened on first load, in each process

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        indices = checked(indices, len(self))
        out = torch.empty((len(indices), *self.shape), dtype=torch.uint8)
        size = math.prod(self.shape)
        rows = out.numpy().reshape(len(indices), size)  # (B, C*H*W), a view of out
        if self._file is None:
            self._file = io.FileIO(self.path, "r")
        for row, index in zip(rows, indices.tolist()):
            if os.preadv(self._file.fileno(), [row], index * size) != size:
                raise OSError(f"image cache {self.path} is shorter than its header says; delete it to rebuild")
        return out


    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}


def build_cache(
    paths: Sequence[Path], labels: torch.Tensor, shape: tuple[int, int, int], cache_dir: Path,
    workers: int | None = None, progress: bool = False,
) -> CachedSource:
    """The images of ``paths`` decoded (``decode_image``) to ``shape`` (C, H, W) into a cache under ``cache_dir``, by
    ``workers`` processes (default: one per core; 1 decodes in this process), or the cache built before for the same
    unchanged files and shape. A new cache of the same paths and shape replaces the stale ones (changed files)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("build_cache needs at least one path")
    shape = tuple(shape)  # type: ignore[assignment]
    cache_dir = Path(cache_dir).expanduser()
    files, key = _digests(paths, shape)
    data = cache_dir / f"{key}.u8"
    if _complete_header(data) is not None:
        return CachedSource(data, labels)
    nbytes = len(paths) * math.prod(shape)
    partial = cache_dir / f"{data.name}.partial-{os.getpid()}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cache_dir).free
        if free < nbytes:
            raise UserError(f"the image cache needs {nbytes / 1e9:.1f} GB in {cache_dir}, which has "
                            f"{free / 1e9:.1f} GB free; free some space or pass another --cache-dir")
        with open(partial, "wb") as file:
            file.truncate(nbytes)
    except OSError as error:
        raise UserError(f"cannot write the image cache in {cache_dir} ({' '.join(str(error).split())}); pass a "
                        "writable --cache-dir") from None
    header = partial.with_name(partial.name + ".json")
    try:
        _decode_into(partial, paths, shape, workers or os.cpu_count() or 1, progress)
        header.write_text(json.dumps({"format": FORMAT, "version": VERSION, "count": len(paths), "shape": shape,
                                      "files": files}))
        os.replace(partial, data)
        os.replace(header, _header_path(data))  # last: from now on the cache is complete
    except BaseException:
        partial.unlink(missing_ok=True)
        header.unlink(missing_ok=True)
        raise
    _remove_stale(cache_dir, files, key)
    return CachedSource(data, labels)


def cache_key(paths: Sequence[Path], shape: tuple[int, int, int]) -> str:
    """A hash of the files' absolute paths, sizes and modification times, the shape and the format version."""
    return _digests(paths, shape)[1]


def _digests(paths: Sequence[Path], shape: tuple[int, int, int]) -> tuple[str, str]:
    """(a hash of the shape and the paths: which data set, the cache key: that and the format version and the files'
    sizes and modification times: which state of it)."""
    files = hashlib.sha256(f"{tuple(shape)}\n".encode())
    key = hashlib.sha256(f"{FORMAT} {VERSION} {tuple(shape)}\n".encode())
    for path in paths:
        stat, name = os.stat(path), os.path.abspath(path)
        files.update(f"{name}\n".encode())
        key.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return files.hexdigest()[:32], key.hexdigest()[:32]


def _remove_stale(cache_dir: Path, files: str, key: str) -> None:
    """Delete the complete caches in ``cache_dir`` of the same paths and shape as cache ``key`` (their files changed
    since), so that a data set edited now and then does not fill the disk with old copies."""
    for header in cache_dir.glob("*.json"):
        try:
            stale = header.stem != key and json.loads(header.read_text()).get("files") == files
        except (OSError, ValueError, AttributeError):
            continue
        if stale:
            header.unlink(missing_ok=True)  # first: the data file without it is no cache
            header.with_suffix(".u8").unlink(missing_ok=True)


def _header_path(data: Path) -> Path:
    return Path(data).with_suffix(".json")


def _complete_header(data: Path) -> dict | None:
    """The header of cache file ``data`` if both exist and agree (format, version, size), else None."""
    try:
        header = json.loads(_header_path(data).read_text())
        complete = (header["format"] == FORMAT and header["version"] == VERSION
                    and os.stat(data).st_size == header["count"] * math.prod(header["shape"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return header if complete else None


def _decode_into(partial: Path, paths: list[Path], shape: tuple[int, int, int], workers: int, progress: bool
                 ) -> None:
    """Decode ``paths`` into their rows of ``partial``, CHUNK files per task, over ``workers`` processes."""
    tasks = [(partial, start, paths[start : start + CHUNK], shape) for start in range(0, len(paths), CHUNK)]
    bar = tqdm(total=len(paths), desc="caching images", unit="img", disable=not progress)
    if workers == 1 or len(tasks) == 1:
        for task in tasks:
            bar.update(_write_rows(task))
    else:
        with _worker_context().Pool(min(workers, len(tasks))) as pool:
            for done in pool.imap_unordered(_write_rows, tasks):
                bar.update(done)
    bar.close()


def _write_rows(task: tuple[Path, int, list[Path], tuple[int, int, int]]) -> int:
    """Decode one task's files into their rows; the number of files."""
    partial, start, paths, shape = task
    with open(partial, "r+b") as file:
        file.seek(start * math.prod(shape))
        file.writelines(decode_image(path, shape).tobytes() for path in paths)
    return len(paths)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Not fork: forking a process that runs torch threads can deadlock. A fork server (where there is one) imports
    this module once and forks every worker from it, instead of each worker importing torch again (spawn)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context
