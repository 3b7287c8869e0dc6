"""Every data set loader on small files in its official format, written here; plus digits and the real Fashion-MNIST."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from weakdml.config import DataConfig
from weakdml.data.registry import DATASET_NAMES, dataset_status, load_dataset
from weakdml.errors import UserError

RNG = np.random.default_rng(0)


def _uint8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def _status(cfg: DataConfig, name: str):
    return next(s for s in dataset_status(cfg) if s.name == name)


# ---------------------------------------------------------------------------------------------------- registry, digits


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UserError, match="unknown dataset 'nope'.*digits, mnist, fashion-mnist"):
        load_dataset(DataConfig(dataset="nope"))


def test_names_and_status_cover_everything(tmp_path: Path) -> None:
    statuses = dataset_status(DataConfig(data_root=str(tmp_path)))
    assert tuple(s.name for s in statuses) == DATASET_NAMES
    assert DATASET_NAMES == ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "stl10", "flowers17", "folder",
                             "cub200", "cars196", "sop", "inshop", "images")
    by_name = {s.name: s for s in statuses}
    assert by_name["digits"].found
    for name in ("mnist", "cifar10", "cifar100", "stl10", "flowers17", "folder", "cub200", "cars196", "sop", "inshop"):
        assert not by_name[name].found, name
        assert by_name[name].how_to_get and by_name[name].description
    assert str(tmp_path / "MNIST" / "raw") in by_name["mnist"].looked_in


def test_digits_fixed_stratified_split() -> None:
    first = load_dataset(DataConfig(dataset="digits", input_size=8))
    second = load_dataset(DataConfig(dataset="digits", input_size=8))
    assert (len(first.train), len(first.test)) == (1437, 360)
    assert first.train.images.shape[1:] == (1, 8, 8) and first.train.images.dtype == torch.uint8
    assert int(first.train.images.max()) == 255 and int(first.train.images.min()) == 0
    assert torch.equal(first.train.images, second.train.images) and torch.equal(first.test.labels, second.test.labels)
    assert set(first.train.labels.tolist()) == set(first.test.labels.tolist()) == set(range(10))
    assert first.classes == [str(c) for c in range(10)] and first.flip is False
    upsampled = load_dataset(DataConfig(dataset="digits"))  # default: 16 px, the same digits
    assert upsampled.train.images.shape[1:] == (1, 16, 16) and torch.equal(upsampled.train.labels, first.train.labels)


def test_input_size_resizes_every_part() -> None:
    bundle = load_dataset(DataConfig(dataset="digits", input_size=16))
    assert bundle.train.images.shape[1:] == (1, 16, 16) and bundle.test.images.shape[1:] == (1, 16, 16)
    assert bundle.train.images.dtype == torch.uint8


# ---------------------------------------------------------------------------------------------------- IDX sets


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    magic = 0x0803 if array.ndim == 3 else 0x0801  # unsigned bytes, 3 or 1 dimensions
    data = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _write_idx_set(folder: Path, gz: bool) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images": _uint8(12, 28, 28),
        "train-labels": RNG.integers(0, 10, 12, dtype=np.uint8),
        "t10k-images": _uint8(5, 28, 28),
        "t10k-labels": RNG.integers(0, 10, 5, dtype=np.uint8),
    }
    for key, array in arrays.items():
        kind = "idx3" if "images" in key else "idx1"
        _write_idx(folder / f"{key}-{kind}-ubyte", array, gz)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name, sub", [("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw"), ("mnist", "")])
def test_idx_sets(tmp_path: Path, name: str, sub: str, gz: bool) -> None:
    arrays = _write_idx_set(tmp_path / sub, gz)
    bundle = load_dataset(DataConfig(dataset=name, data_root=str(tmp_path)))
    assert bundle.train.images.shape == (12, 1, 28, 28) and bundle.test.images.shape == (5, 1, 28, 28)
    assert np.array_equal(bundle.train.images[:, 0].numpy(), arrays["train-images"])
    assert np.array_equal(bundle.test.labels.numpy(), arrays["t10k-labels"])
    assert bundle.train.labels.dtype == torch.long and len(bundle.classes) == 10
    assert bundle.flip is (name == "fashion-mnist")
    assert not list(tmp_path.rglob("*-ubyte")) or not gz  # gz files are unpacked elsewhere, not beside them
    assert _status(DataConfig(dataset=name, data_root=str(tmp_path)), name).found


def test_idx_missing_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=rf"mnist: files not found \(looked in {tmp_path}/MNIST/raw.*--download"):
        load_dataset(DataConfig(dataset="mnist", data_root=str(tmp_path)))


def test_idx_corrupt_file_is_a_user_error(tmp_path: Path) -> None:
    _write_idx_set(tmp_path, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01garbage")
    with pytest.raises(UserError, match="train-images-idx3-ubyte is not a valid IDX file"):
        load_dataset(DataConfig(dataset="mnist", data_root=str(tmp_path)))


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian dataset-fashion-mnist missing"
)
def test_real_debian_fashion_mnist(tmp_path: Path) -> None:
    cfg = DataConfig(dataset="fashion-mnist", data_root=str(tmp_path))
    bundle = load_dataset(cfg)
    assert (len(bundle.train), len(bundle.test)) == (60000, 10000)
    assert bundle.train.images.shape[1:] == (1, 28, 28)
    assert torch.equal(bundle.train.labels.bincount(), torch.full((10,), 6000))
    assert bundle.classes[0] == "T-shirt/top" and _status(cfg, "fashion-mnist").found


# ---------------------------------------------------------------------------------------------------- CIFAR


def _pickle(path: Path, obj: dict) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))  # str keys, as the official files read with encoding="latin1"


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar(tmp_path: Path, name: str) -> None:
    ten = name == "cifar10"
    folder = tmp_path / ("cifar-10-batches-py" if ten else "cifar-100-python")
    folder.mkdir()
    label_key, n_classes = ("labels", 10) if ten else ("fine_labels", 100)
    batches = {}
    for file in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if ten else ["train", "test"]:
        count = 3 if "test" in file else 4
        batches[file] = (_uint8(count, 3 * 32 * 32), RNG.integers(0, n_classes, count).tolist())
        _pickle(folder / file, {"data": batches[file][0], label_key: batches[file][1]})
    names = [f"class{i}" for i in range(n_classes)]
    _pickle(folder / ("batches.meta" if ten else "meta"), {"label_names" if ten else "fine_label_names": names})

    bundle = load_dataset(DataConfig(dataset=name, data_root=str(tmp_path)))
    train_files = [f for f in batches if "test" not in f]
    assert bundle.train.images.shape == (4 * len(train_files), 3, 32, 32) and bundle.test.images.shape == (3, 3, 32, 32)
    first = batches[train_files[0]][0][0].reshape(3, 32, 32)  # official layout: channel planes, rows first
    assert np.array_equal(bundle.train.images[0].numpy(), first)
    assert bundle.test.labels.tolist() == batches["test_batch" if ten else "test"][1]
    assert bundle.classes == names and bundle.flip


def test_cifar_missing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"cifar10: files not found .*cifar-10-batches-py.*cifar-10-python.tar.gz"):
        load_dataset(DataConfig(dataset="cifar10", data_root=str(tmp_path)))


# ---------------------------------------------------------------------------------------------------- STL-10


def _write_stl(path: Path, images: np.ndarray) -> None:
    path.write_bytes(images.transpose(0, 1, 3, 2).tobytes())  # official files store each channel column by column


@pytest.mark.parametrize("with_unlabelled", [True, False])
def test_stl10(tmp_path: Path, with_unlabelled: bool) -> None:
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    train, test, extra = _uint8(3, 3, 96, 96), _uint8(2, 3, 96, 96), _uint8(2, 3, 96, 96)
    _write_stl(folder / "train_X.bin", train)
    _write_stl(folder / "test_X.bin", test)
    (folder / "train_y.bin").write_bytes(bytes([1, 10, 4]))  # labels 1..10 on disk
    (folder / "test_y.bin").write_bytes(bytes([2, 3]))
    if with_unlabelled:
        _write_stl(folder / "unlabeled_X.bin", extra)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")

    bundle = load_dataset(DataConfig(dataset="stl10", data_root=str(tmp_path)))
    assert torch.equal(bundle.train.images, torch.from_numpy(train)) and torch.equal(
        bundle.test.images, torch.from_numpy(test)
    )
    assert bundle.train.labels.tolist() == [0, 9, 3] and bundle.test.labels.tolist() == [1, 2]
    assert bundle.classes == names
    if with_unlabelled:
        assert torch.equal(bundle.unlabeled.images, torch.from_numpy(extra))
        assert bundle.unlabeled.labels.tolist() == [-1, -1]
    else:
        assert bundle.unlabeled is None
    assert _status(DataConfig(data_root=str(tmp_path)), "stl10").found


# ---------------------------------------------------------------------------------------------------- Flowers17


@pytest.fixture(scope="module")
def flowers_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flowers")
    folder = root / "17flowers" / "jpg"
    folder.mkdir(parents=True)
    for i in range(1, 1361):
        shade = 10 * ((i - 1) // 80)  # one flat colour per class
        Image.new("RGB", (8 + i % 3, 8), (shade, 100, 200)).save(folder / f"image_{i:04d}.jpg")
    return root


def test_flowers17_without_split_file(flowers_root: Path) -> None:
    bundle = load_dataset(DataConfig(dataset="flowers17", data_root=str(flowers_root)))
    assert (len(bundle.train), len(bundle.test)) == (1088, 272)
    assert bundle.train.images.shape[1:] == (3, 64, 64) and bundle.train.images.dtype == torch.uint8
    assert torch.equal(bundle.test.labels.bincount(), torch.full((17,), 16))
    assert bundle.classes[0] == "Daffodil" and bundle.classes[-1] == "Pansy"
    shade = bundle.train.images[:, 0].float().mean(dim=(1, 2))  # red channel encodes the class
    assert torch.allclose(shade, bundle.train.labels.float() * 10, atol=4)


def test_flowers17_official_split(flowers_root: Path, tmp_path: Path) -> None:
    mat = {"trn1": np.arange(1, 681)[None], "val1": np.arange(681, 1021)[None], "tst1": np.arange(1021, 1361)[None]}
    scipy.io.savemat(flowers_root / "17flowers" / "datasplits.mat", mat)
    try:
        bundle = load_dataset(DataConfig(dataset="flowers17", data_root=str(flowers_root), input_size=16))
    finally:
        (flowers_root / "17flowers" / "datasplits.mat").unlink()
    assert (len(bundle.train), len(bundle.test)) == (1020, 340)
    assert bundle.test.labels.min() == 1020 // 80 and bundle.train.images.shape[1:] == (3, 16, 16)


def test_flowers17_missing_and_partial(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=rf"flowers17: files not found \(looked in {tmp_path}/jpg"):
        load_dataset(DataConfig(dataset="flowers17", data_root=str(tmp_path)))
    (tmp_path / "jpg").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "jpg" / "image_0001.jpg")
    with pytest.raises(UserError, match="1359 of 1360 images missing.*image_0002.jpg"):
        load_dataset(DataConfig(dataset="flowers17", data_root=str(tmp_path)))


# ---------------------------------------------------------------------------------------------------- folders


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_grey_png_round_trip(tmp_path: Path) -> None:
    cat, dog = _uint8(10, 12), _uint8(10, 12)
    _save(tmp_path / "train" / "cat" / "a.png", cat)
    _save(tmp_path / "train" / "dog" / "b.png", dog)
    _save(tmp_path / "Test" / "dog" / "c.png", dog)
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    bundle = load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path)))
    assert (
        bundle.classes == ["cat", "dog"]
        and bundle.train.labels.tolist() == [0, 1]
        and bundle.test.labels.tolist() == [1]
    )
    assert bundle.train.images.shape == (2, 1, 10, 12)  # same size everywhere and no --input-size: kept as is
    assert np.array_equal(bundle.train.images[0, 0].numpy(), cat)
    assert _status(DataConfig(dataset="folder", data_root=str(tmp_path)), "folder").found


def test_folder_mixed_formats_colour_and_sizes(tmp_path: Path) -> None:
    colour = _uint8(20, 30, 3)
    _save(tmp_path / "Train" / "a" / "1.png", colour)
    _save(tmp_path / "Train" / "a" / "2.jpg", _uint8(40, 40, 3))
    _save(tmp_path / "Train" / "b" / "3.bmp", _uint8(16, 16))
    _save(tmp_path / "Train" / "b" / "5.png", _uint8(20, 30, 3))
    _save(tmp_path / "validation" / "b" / "4.gif", _uint8(16, 16))
    bundle = load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path)))
    assert bundle.train.images.shape == (4, 3, 64, 64) and bundle.test.images.shape == (
        1,
        3,
        64,
        64,
    )  # any colour -> RGB
    grey = bundle.train.images[2]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])

    sized = load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path), input_size=8))
    assert sized.train.images.shape == (4, 3, 8, 8)
    only_png = load_dataset(
        DataConfig(dataset="folder", train_dir=str(tmp_path / "Train"), test_dir=str(tmp_path / "Train"), im_ext=".png")
    )
    assert only_png.train.images.shape == (2, 3, 20, 30) and np.array_equal(
        only_png.train.images[0].permute(1, 2, 0).numpy(), colour
    )
    with pytest.raises(UserError, match=r"validation holds no images with extension \.png"):  # only a gif there
        load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path), im_ext="PNG"))


def test_folder_errors(tmp_path: Path) -> None:
    def load(**kw) -> None:
        load_dataset(DataConfig(dataset="folder", **kw))

    with pytest.raises(UserError, match="needs a location"):
        load()
    with pytest.raises(UserError, match=rf"training folder {tmp_path}/train not found"):
        load(data_root=str(tmp_path))
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "loose.png").write_bytes(b"")
    with pytest.raises(UserError, match="has no class subfolders"):
        load(data_root=str(tmp_path))
    (tmp_path / "train" / "cat").mkdir()
    (tmp_path / "train" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match="holds no images with extension"):
        load(data_root=str(tmp_path))
    _save(tmp_path / "train" / "cat" / "ok.png", _uint8(4, 4))
    _save(tmp_path / "test" / "cow" / "ok.png", _uint8(4, 4))
    with pytest.raises(UserError, match="classes not in training folder.*cow"):
        load(data_root=str(tmp_path))
    (tmp_path / "test" / "cow").rename(tmp_path / "test" / "cat")
    with pytest.raises(UserError, match="has one class"):
        load(data_root=str(tmp_path))
    _save(tmp_path / "train" / "dog" / "ok.png", _uint8(4, 4))
    (tmp_path / "test" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UserError, match=r"cannot read image .*broken\.jpg"):
        load(data_root=str(tmp_path))
    with pytest.raises(UserError, match="--train-dir needs --test-dir"):
        load(train_dir=str(tmp_path / "train"))


# ---------------------------------------------------------------------------------------------------- --unlabeled-dir


def test_unlabeled_dir_matches_train(tmp_path: Path) -> None:
    _save(tmp_path / "extra" / "x.png", _uint8(30, 30, 3))
    _save(tmp_path / "extra" / "deeper" / "y.jpg", _uint8(5, 9))
    bundle = load_dataset(DataConfig(dataset="digits", unlabeled_dir=str(tmp_path / "extra")))
    assert bundle.unlabeled.images.shape == (2, 1, 16, 16) and bundle.unlabeled.labels.tolist() == [-1, -1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        load_dataset(DataConfig(dataset="digits", unlabeled_dir=str(tmp_path / "empty")))
    with pytest.raises(UserError, match="not found; check --unlabeled-dir"):
        load_dataset(DataConfig(dataset="digits", unlabeled_dir=str(tmp_path / "nothing")))
