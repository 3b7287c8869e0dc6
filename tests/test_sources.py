"""Image sources (memory, disk cache, files) against read_images, the cache's reuse and invalidation, interrupted
builds, and the batch loader's order with a thread and with worker processes."""

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import Interrupt

import weakdml.data.sources.cache as cache_module
from weakdml.data.images import decode_image, read_images
from weakdml.data.loader import load_batches
from weakdml.data.sources import CachedSource, FileSource, ImageSet, build_cache, view
from weakdml.errors import UserError

SHAPE = (3, 12, 10)  # not square, so that a swap of height and width shows


def write_images(folder: Path, n: int = 10, seed: int = 0) -> list[Path]:
    """``n`` small files of mixed formats, sizes and modes (grey PNG, colour JPEG, colour PNG)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        height, width = int(rng.integers(8, 20)), int(rng.integers(8, 20))
        kind = ("grey.png", "colour.jpg", "colour.png")[i % 3]
        pixels = rng.integers(0, 256, (height, width) if kind == "grey.png" else (height, width, 3), dtype=np.uint8)
        path = folder / f"{i:02d}-{kind}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def files(tmp_path: Path) -> tuple[list[Path], torch.Tensor]:
    paths = write_images(tmp_path / "images")
    return paths, torch.arange(len(paths)) % 3


def sources(paths: list[Path], labels: torch.Tensor, shape: tuple, cache_dir: Path) -> dict:
    reference = read_images(paths, size=shape[1:], channels=shape[0])
    return {"memory": ImageSet(reference, labels), "files": FileSource(paths, labels, shape),
            "cache": build_cache(paths, labels, shape, cache_dir, workers=1)}


@pytest.mark.parametrize("shape", [SHAPE, (1, 9, 14)])
def test_every_source_loads_what_read_images_reads(files, tmp_path: Path, shape: tuple) -> None:
    paths, labels = files
    reference = read_images(paths, size=shape[1:], channels=shape[0])
    assert reference.shape == (len(paths), *shape)
    indices = torch.tensor([4, 0, 7, 7, 2])
    for name, source in sources(paths, labels, shape, tmp_path / "cache").items():
        assert source.shape == shape and len(source) == len(paths), name
        batch = source.load(indices)
        assert batch.dtype == torch.uint8 and torch.equal(batch, reference[indices]), name
        assert torch.equal(source.labels, labels), name
        assert source.load(torch.tensor([], dtype=torch.long)).shape == (0, *shape), name
    assert np.array_equal(decode_image(paths[3], shape), reference[3].numpy())


def test_views_pass_loads_through_and_compose(files, tmp_path: Path) -> None:
    paths, labels = files
    reference = read_images(paths, size=SHAPE[1:], channels=3)
    for name, source in sources(paths, labels, SHAPE, tmp_path / "cache").items():
        picked = view(source, torch.tensor([5, 1, 3, 8]))
        assert picked.parts[0][0] is source and len(picked) == 4 and picked.shape == SHAPE, name
        assert torch.equal(picked.labels, labels[[5, 1, 3, 8]]), name
        assert torch.equal(picked.load(torch.tensor([2, 0])), reference[[3, 5]]), name
        inner = view(picked, torch.tensor([3, 1]))
        assert torch.equal(inner.load(torch.tensor([0, 1])), reference[[8, 1]]), name
        for bad in (-1, len(paths)):
            with pytest.raises(IndexError, match="out of range"):
                source.load(torch.tensor([0, bad]))
        with pytest.raises(IndexError, match="out of range for a source of 4 images"):
            picked.load(torch.tensor([4]))


def test_cache_round_trip_in_parallel_and_through_pickle(files, tmp_path: Path, monkeypatch, capsys) -> None:
    paths, labels = files
    monkeypatch.setattr(cache_module, "CHUNK", 3)  # 4 tasks for the 2 worker processes
    cache = build_cache(paths, labels, SHAPE, tmp_path / "cache", workers=2, progress=True)
    assert "caching images: 100%" in capsys.readouterr().err
    reference = read_images(paths, size=SHAPE[1:], channels=3)
    everything = torch.arange(len(paths))
    assert torch.equal(cache.load(everything), reference)
    key = cache.path.stem
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"{key}.json", f"{key}.u8"]
    assert cache.path.stat().st_size == reference.numel()
    header = json.loads((tmp_path / "cache" / f"{key}.json").read_text())
    assert header["count"] == len(paths) and header["shape"] == list(SHAPE)
    copy = pickle.loads(pickle.dumps(cache))
    assert torch.equal(copy.load(everything.flip(0)), reference.flip(0)) and torch.equal(copy.labels, labels)


def counting_decoder(monkeypatch, fail_after: int | None = None) -> list[Path]:
    """Replace the cache's decoder by one that records each file it decodes (and raises Interrupt after
    ``fail_after`` files, as a kill would stop the build)."""
    decoded: list[Path] = []

    def decode(path: Path, shape: tuple) -> np.ndarray:
        if fail_after is not None and len(decoded) == fail_after:
            raise Interrupt
        decoded.append(path)
        return decode_image(path, shape)

    monkeypatch.setattr(cache_module, "decode_image", decode)
    return decoded


def test_cache_is_reused_while_files_are_unchanged(files, tmp_path: Path, monkeypatch) -> None:
    paths, labels = files
    cache_dir = tmp_path / "cache"
    decoded = counting_decoder(monkeypatch)
    first = build_cache(paths, labels, SHAPE, cache_dir, workers=1)
    assert decoded == paths
    decoded.clear()
    again = build_cache(paths, labels.flip(0), SHAPE, cache_dir, workers=1)
    assert decoded == [] and again.path == first.path and torch.equal(again.labels, labels.flip(0))


def rewrite(path: Path, pixels: np.ndarray, mtime_ns: int) -> None:
    Image.fromarray(pixels).save(path)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_cache_is_rebuilt_when_a_file_or_the_shape_changes(files, tmp_path: Path, monkeypatch) -> None:
    paths, labels = files
    cache_dir = tmp_path / "cache"
    decoded = counting_decoder(monkeypatch)
    keys = {build_cache(paths, labels, SHAPE, cache_dir, workers=1).path}
    other = write_images(tmp_path / "other", n=3, seed=1)
    kept = build_cache(other, torch.zeros(3), SHAPE, cache_dir, workers=1).path  # another data set: not stale
    mtime = paths[4].stat().st_mtime_ns
    original = np.asarray(Image.open(paths[4]))
    changes = {  # the key sees sizes and times: a change of content alone, at the same size and time, is not seen
        "edited": lambda: rewrite(paths[4], 255 - original, mtime + 10**9),
        "other size, same time": lambda: rewrite(paths[4], np.zeros((30, 30, 3), np.uint8), mtime + 10**9),
        "same file, other time": lambda: os.utime(paths[4], ns=(mtime + 2 * 10**9, mtime + 2 * 10**9)),
    }
    for name, change in changes.items():
        change()
        decoded.clear()
        cache = build_cache(paths, labels, SHAPE, cache_dir, workers=1)
        assert decoded == paths and cache.path not in keys, name
        expected = [p.with_suffix(suffix) for p in (cache.path, kept) for suffix in (".json", ".u8")]
        assert sorted(cache_dir.iterdir()) == sorted(expected), name  # the stale cache is gone
        assert torch.equal(cache.load(torch.tensor([4])), read_images([paths[4]], size=SHAPE[1:], channels=3)), name
        keys.add(cache.path)
    decoded.clear()
    grey = build_cache(paths, labels, (1, *SHAPE[1:]), cache_dir, workers=1)
    assert decoded == paths and grey.path not in keys and grey.shape == (1, *SHAPE[1:])
    assert len(list(cache_dir.glob("*.u8"))) == 3  # another shape is another cache, not a stale one


def test_interrupted_build_leaves_no_cache_and_the_next_build_succeeds(files, tmp_path: Path, monkeypatch) -> None:
    paths, labels = files
    cache_dir = tmp_path / "cache"
    decoded = counting_decoder(monkeypatch, fail_after=5)
    with pytest.raises(Interrupt):
        build_cache(paths, labels, SHAPE, cache_dir, workers=1)
    assert list(cache_dir.iterdir()) == []
    key = cache_module.cache_key(paths, SHAPE)
    (cache_dir / f"{key}.u8.partial-12345").write_bytes(b"\0" * 100)  # left by a build that was killed
    (cache_dir / f"{key}.u8").write_bytes(b"\0" * (len(paths) * 360))  # killed between the data and header renames
    with pytest.raises(ValueError, match="not a complete image cache"):
        CachedSource(cache_dir / f"{key}.u8", labels)
    decoded = counting_decoder(monkeypatch)
    cache = build_cache(paths, labels, SHAPE, cache_dir, workers=1)
    assert decoded == paths
    assert torch.equal(cache.load(torch.arange(len(paths))), read_images(paths, size=SHAPE[1:], channels=3))


def test_unreadable_file_stops_a_parallel_build_with_its_name(files, tmp_path: Path, monkeypatch) -> None:
    paths, labels = files
    monkeypatch.setattr(cache_module, "CHUNK", 2)
    paths[6].write_bytes(b"not an image")
    cache_dir = tmp_path / "cache"
    with pytest.raises(UserError, match=f"cannot read image {paths[6]} .*; remove or replace that file"):
        build_cache(paths, labels, SHAPE, cache_dir, workers=2)
    assert list(cache_dir.iterdir()) == []
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(paths[6], format="PNG")
    cache = build_cache(paths, labels, SHAPE, cache_dir, workers=2)
    assert torch.equal(cache.load(torch.tensor([6])), torch.zeros((1, *SHAPE), dtype=torch.uint8))


def test_unwritable_or_full_cache_dir_is_a_user_error(files, tmp_path: Path, monkeypatch) -> None:
    paths, labels = files
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match=f"^cannot write the image cache in {blocker}/cache .*; pass a writable "
                                        "--cache-dir$"):
        build_cache(paths, labels, SHAPE, blocker / "cache", workers=1)
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 3599))
    with pytest.raises(UserError, match=f"^the image cache needs 0.0 GB in {tmp_path}/cache, which has 0.0 GB free; "
                                        "free some space or pass another --cache-dir$"):
        build_cache(paths, labels, SHAPE, tmp_path / "cache", workers=1)
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", ["files", "cache"])
def test_load_batches_yields_every_batch_in_order(files, tmp_path: Path, workers: int, kind: str) -> None:
    paths, labels = files
    source = sources(paths, labels, SHAPE, tmp_path / "cache")[kind]
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(0))
    batches = list(order.split(3)) + [torch.tensor([2, 2])]  # uneven sizes and a repeated index
    for prefetch in (0, 2):
        loaded = list(load_batches(source, (b for b in batches), workers=workers, prefetch=prefetch,
                                   device=torch.device("cpu")))
        assert len(loaded) == len(batches)
        for (indices, images), expected in zip(loaded, batches):
            assert torch.equal(indices, expected) and torch.equal(images, source.load(expected))


@pytest.mark.parametrize("workers", [0, 2])
def test_load_batches_raises_an_unreadable_file_as_one_line(files, workers: int) -> None:
    paths, labels = files
    paths[5].write_bytes(b"broken")
    source = FileSource(paths, labels, SHAPE)
    batches = [torch.tensor([0, 1]), torch.tensor([4, 5]), torch.tensor([6])]
    seen = []
    with pytest.raises(UserError, match=f"^cannot read image {paths[5]} .*; remove or replace that file$"):
        for indices, _ in load_batches(source, batches, workers=workers):
            seen.append(indices)
    assert [i.tolist() for i in seen] == [[0, 1]]


def test_load_batches_can_be_left_early() -> None:
    source = ImageSet(torch.arange(40, dtype=torch.uint8).reshape(10, 1, 2, 2), torch.zeros(10))
    batches = load_batches(source, torch.arange(10).split(2), prefetch=3)
    indices, images = next(batches)
    batches.close()  # the background thread stops without loading the rest
    assert indices.tolist() == [0, 1] and torch.equal(images, source.images[:2])
