"""The four retrieval benchmarks from tiny files in their official formats (CUB-200-2011, Cars196, Stanford Online
Products, In-shop): labels and class-disjoint splits as the protocols say, In-shop's queries and gallery, Recall@K,
one-line errors for bad files, images read lazily or through the cache; the papers' crops; `weakdml train` on them."""

import json
import zlib

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from weakdml.cli import main
from weakdml.compat import import_torchvision
from weakdml.config import build_config
from weakdml.data import augment as augment_module
from weakdml.data.images import decode_image
from weakdml.data.prepare import prepare_data
from weakdml.data.registry import dataset_status, load_dataset
from weakdml.data.sources import CachedSource, FileSource, ImageSet, all_images
from weakdml.data.sources import files as files_module
from weakdml.engine.stages import build_method
from weakdml.errors import UserError
from weakdml.methods import METHODS
from weakdml.models.embedding import channel_stats

SIZE = 32  # --input-size of the tests: images stored at 32 x 32, crops of 28


def colour(class_id: int) -> tuple[int, int, int]:
    """A colour per class, so that an image's pixels say which class it was written for."""
    return (class_id * 37) % 256, (class_id * 91) % 256, (255 - class_id * 53) % 256


def write_image(path, class_id: int, size=(20, 14)) -> None:
    """An image of the class's colour with noise (seeded by the path), so that images of a class differ."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(zlib.crc32(path.name.encode())).normal(0, 25, (size[1], size[0], 3))
    Image.fromarray(np.clip(np.array(colour(class_id)) + noise, 0, 255).astype(np.uint8)).save(path)


def written_class(source, index: int, class_ids) -> int:
    """The class whose colour is nearest to image ``index`` of ``source``."""
    mean = source.load(torch.tensor([index]))[0].float().mean(dim=(1, 2))
    return min(class_ids, key=lambda c: float((mean - torch.tensor(colour(c), dtype=torch.float)).abs().sum()))


def assert_labels_match_pixels(source, names: list[str]) -> None:
    """Every image's label names (through ``names``) the class its pixels were written for."""
    ids = [int(name.removeprefix("id_")) for name in names]
    for i, label in enumerate(source.labels.tolist()):
        assert written_class(source, i, ids) == ids[label], i


def write_cub(root, per_class: dict[int, int]):
    """CUB_200_2011/{images.txt, image_class_labels.txt, images/...} for ``per_class`` (class id -> images)."""
    folder = root / "CUB_200_2011"
    names, classes = [], []
    for class_id, count in per_class.items():
        for k in range(count):
            name = f"{class_id:03d}.Bird_{class_id}/Bird_{class_id}_{k}.jpg"
            write_image(folder / "images" / name, class_id, (20 + k, 14))
            names.append(name)
            classes.append(class_id)
    (folder / "images.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names, 1)))
    (folder / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    return folder


def write_cars(root, per_class: dict[int, int], fields=("relative_im_path", "class")):
    """cars196/{cars_annos.mat, car_ims/...}, the annotations a struct array as in the official file."""
    folder = root / "cars196"
    rows: list[tuple[str, int]] = []
    for class_id, count in per_class.items():
        rows += [(f"car_ims/{len(rows) + 1:06d}.jpg", class_id) for _ in range(count)]
    dtype = [(name, "O") for name in ("relative_im_path", "bbox_x1", "class", "test")
             if name in fields or name in ("bbox_x1", "test")]
    annotations = np.zeros((1, len(rows)), dtype=dtype)
    for i, (path, class_id) in enumerate(rows):
        write_image(folder / path, class_id)
        values = {"relative_im_path": path, "bbox_x1": np.array([[3]]), "class": np.array([[class_id]], np.uint8),
                  "test": np.array([[i % 2]], np.uint8)}
        annotations[0, i] = tuple(values[name] for name, _ in dtype)
    scipy.io.savemat(folder / "cars_annos.mat", {"annotations": annotations})
    return folder


def write_sop(root, train: dict[int, int], test: dict[int, int]):
    """Stanford_Online_Products/{Ebay_train.txt, Ebay_test.txt, <super class>_final/...}."""
    folder = root / "Stanford_Online_Products"
    image_id = 0
    for name, per_class in (("Ebay_train.txt", train), ("Ebay_test.txt", test)):
        lines = ["image_id class_id super_class_id path"]
        for class_id, count in per_class.items():
            for k in range(count):
                image_id += 1
                path = f"bicycle_final/{class_id}_{k}.JPG"
                write_image(folder / path, class_id)
                lines.append(f"{image_id} {class_id} 1 {path}")
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def write_inshop(root, rows: list[tuple[int, str]]):
    """InShop/{list_eval_partition.txt, img/...} for (item number, evaluation status) rows."""
    folder = root / "InShop"
    lines = []
    for k, (item, status) in enumerate(rows):
        name = f"img/WOMEN/Dresses/id_{item:08d}/{k:02d}_1_front.jpg"
        write_image(folder / name, item)
        lines.append(f"{name}    id_{item:08d}   {status}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "list_eval_partition.txt").write_text(f"{len(lines)}\nimage_name item_id evaluation_status\n"
                                                    + "\n".join(lines) + "\n")
    return folder


def load(name: str, root, **overrides):
    return load_dataset(build_config(overrides={"dataset": name, "data_root": str(root), "input_size": SIZE,
                                                **overrides}).data)


def test_cub_trains_on_classes_1_to_100_and_tests_on_101_to_200(tmp_path):
    write_cub(tmp_path, {1: 2, 100: 3, 101: 2, 200: 1})
    bundle = load("cub200", tmp_path)
    assert (bundle.task, bundle.classes, bundle.test_classes) == ("retrieval", ["1", "100"], ["101", "200"])
    assert bundle.train.labels.tolist() == [0, 0, 1, 1, 1] and bundle.test.labels.tolist() == [0, 0, 1]
    assert bundle.recall_ks == (1, 2, 4, 8) and bundle.gallery is None
    assert bundle.train.shape == (3, SIZE, SIZE) and bundle.crop == 28  # stored squashed to a square, 7/8 cropped
    assert_labels_match_pixels(bundle.train, bundle.classes)
    assert_labels_match_pixels(bundle.test, bundle.test_classes)


def test_cars_splits_at_class_98_whatever_the_test_flags(tmp_path):
    write_cars(tmp_path, {1: 2, 98: 2, 99: 1, 196: 3})  # the file's own test flags alternate
    bundle = load("cars196", tmp_path)
    assert (bundle.classes, bundle.test_classes) == (["1", "98"], ["99", "196"])
    assert bundle.train.labels.tolist() == [0, 0, 1, 1] and bundle.test.labels.tolist() == [0, 1, 1, 1]
    assert bundle.recall_ks == (1, 2, 4, 8)
    assert_labels_match_pixels(bundle.train, bundle.classes)
    assert_labels_match_pixels(bundle.test, bundle.test_classes)


def test_sop_reads_its_two_list_files_with_their_headers(tmp_path):
    write_sop(tmp_path, {1: 2, 11318: 2}, {11319: 3, 22634: 2})
    bundle = load("sop", tmp_path)
    assert (bundle.classes, bundle.test_classes) == (["1", "11318"], ["11319", "22634"])
    assert bundle.test.labels.tolist() == [0, 0, 0, 1, 1] and bundle.recall_ks == (1, 10, 100, 1000)
    assert_labels_match_pixels(bundle.train, bundle.classes)
    assert_labels_match_pixels(bundle.test, bundle.test_classes)


def test_inshop_test_part_is_the_queries_then_the_gallery_that_bundle_gallery_marks(tmp_path):
    rows = [(1, "train"), (2, "train"), (1, "train"), (3, "query"), (4, "gallery"), (3, "gallery"), (4, "query"),
            (3, "query")]
    write_inshop(tmp_path, rows)
    bundle = load("inshop", tmp_path)
    assert (bundle.classes, bundle.test_classes) == (["id_00000001", "id_00000002"], ["id_00000003", "id_00000004"])
    assert bundle.train.labels.tolist() == [0, 1, 0]
    assert bundle.test.labels.tolist() == [0, 1, 0, 1, 0]  # queries 3, 4, 3 then gallery 4, 3
    assert bundle.gallery.tolist() == [False, False, False, True, True]
    assert bundle.recall_ks == (1, 10, 20, 30)
    assert_labels_match_pixels(bundle.test, bundle.test_classes)
    data = prepare_data(build_config(overrides={"dataset": "inshop", "data_root": str(tmp_path), "input_size": SIZE,
                                                "labeled_fraction": 1.0, "val_fraction": 0.0}))
    assert data.task == "retrieval" and torch.equal(data.test.labels, bundle.test.labels)


def test_a_data_set_is_found_in_data_root_or_in_its_official_folder_below_it(tmp_path):
    folder = write_cub(tmp_path, {1: 1, 101: 1})
    assert len(load("cub200", folder).train) == len(load("cub200", tmp_path).train) == 1
    statuses = {s.name: s for s in dataset_status(build_config(overrides={"data_root": str(tmp_path)}).data)}
    assert statuses["cub200"].found and not statuses["sop"].found
    assert str(tmp_path / "Stanford_Online_Products" / "Ebay_train.txt") in statuses["sop"].looked_in
    assert "cvgl.stanford.edu" in statuses["sop"].how_to_get
    with pytest.raises(UserError, match=r"sop: files not found \(looked in .*Ebay_train.txt.*Stanford Online"):
        load("sop", tmp_path)


def test_weakdml_datasets_lists_the_retrieval_benchmarks_and_how_to_get_them(tmp_path, capsys):
    write_sop(tmp_path, {1: 1}, {2: 1})
    assert main(["datasets", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name, where in (("cub200", "CUB_200_2011.tgz"), ("cars196", "cars_annos.mat"), ("sop", "Ebay_train.txt"),
                        ("inshop", "list_eval_partition.txt")):
        assert name in out and where in out, name


@pytest.mark.parametrize("edit, message", [
    (lambda f: (f / "image_class_labels.txt").write_text("1 1\n2 101\n"),
     r"images.txt:3: image 3 has no class in .*image_class_labels.txt"),
    (lambda f: (f / "image_class_labels.txt").write_text("1 1\n2 101\n3 101\n4 1\n"),
     r"image_class_labels.txt gives a class to image 4, which .*images.txt does not list"),
    (lambda f: (f / "images.txt").write_text("1 a.jpg\n2 b c.jpg\n"), r"images.txt:2: expected 2 fields, found 3"),
    (lambda f: (f / "image_class_labels.txt").write_text("1 1\n2 one\n3 101\n"),
     r"image_class_labels.txt:2: a class id must be an integer, found 'one'"),
    (lambda f: (f / "image_class_labels.txt").unlink(), r"cannot read list file .*image_class_labels.txt"),
    (lambda f: next((f / "images").rglob("*_0.jpg")).unlink(),
     r"image .*Bird_1_0.jpg \(listed at .*images.txt:1\) not found"),
])
def test_bad_cub_files_are_one_line_that_names_the_file_and_line(tmp_path, edit, message):
    folder = write_cub(tmp_path, {1: 1, 101: 2})
    edit(folder)
    with pytest.raises(UserError, match=message) as error:
        load("cub200", tmp_path)
    assert "\n" not in str(error.value)


def test_bad_files_of_the_other_benchmarks_are_one_line_that_names_them(tmp_path):
    write_cars(tmp_path / "a", {1: 1, 99: 1}, fields=("relative_im_path",))
    with pytest.raises(UserError, match=r"cannot read the annotations .*cars_annos.mat \(.*class"):
        load("cars196", tmp_path / "a")
    write_cars(tmp_path / "b", {1: 1, 197: 1})
    with pytest.raises(UserError, match=r"cars_annos.mat: annotation 2 has class 197, outside 1..196"):
        load("cars196", tmp_path / "b")
    write_sop(tmp_path / "c", {1: 1, 2: 1}, {3: 1, 2: 1})
    with pytest.raises(UserError, match=r"Ebay_test.txt:3 puts class 2 in the test part, but it is a training class"):
        load("sop", tmp_path / "c")
    folder = write_inshop(tmp_path / "d", [(1, "train"), (2, "query"), (2, "gallery")])
    listed = folder / "list_eval_partition.txt"
    listed.write_text(listed.read_text().replace("3\n", "4\n", 1))
    with pytest.raises(UserError, match=r"list_eval_partition.txt:1 says 4 images, but 3 are listed"):
        load("inshop", tmp_path / "d")
    listed.write_text(listed.read_text().replace("4\n", "3\n", 1).replace("gallery\n", "galery\n"))
    with pytest.raises(UserError, match=r"list_eval_partition.txt:5: evaluation status 'galery' is none of"):
        load("inshop", tmp_path / "d")
    write_inshop(tmp_path / "e", [(1, "train"), (2, "query")])
    with pytest.raises(UserError, match=r"inshop: the list files name no gallery image"):
        load("inshop", tmp_path / "e")


def test_images_stay_on_disk_decoded_at_each_load_or_once_into_the_cache(tmp_path, monkeypatch):
    """Loading a benchmark decodes no image; its parts are file or cache sources (never one tensor of the whole set)
    whose loads give the decoded pixels; the cache holds every image once; an unwritable --cache-dir is one line."""
    write_sop(tmp_path, {1: 3, 2: 2}, {3: 2, 4: 2})
    decoded = []
    monkeypatch.setattr(files_module, "decode_image", lambda path, shape: decoded.append(path) or
                        decode_image(path, shape))
    lazy = load("sop", tmp_path)
    assert isinstance(lazy.train, FileSource) and isinstance(lazy.test, FileSource) and decoded == []
    cached = load("sop", tmp_path, cache_dir=str(tmp_path / "cache"))
    assert isinstance(cached.train, CachedSource) and isinstance(cached.test, CachedSource)
    assert sorted(p.stat().st_size for p in (tmp_path / "cache").glob("*.u8")) == [4 * 3 * SIZE ** 2, 5 * 3 * SIZE ** 2]
    for part in ("train", "test"):
        index = torch.arange(len(getattr(lazy, part)))
        assert torch.equal(getattr(cached, part).load(index), getattr(lazy, part).load(index))
        assert torch.equal(getattr(cached, part).labels, getattr(lazy, part).labels)
    assert len(decoded) == 9  # the lazy loads above, one decode per image
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(UserError, match=r"cannot write the image cache in .*taken.*pass a writable --cache-dir"):
        load("sop", tmp_path, cache_dir=str(tmp_path / "taken" / "cache"))
    with pytest.raises(UserError, match="choose one"):
        load("sop", tmp_path, cache_dir=str(tmp_path / "cache"), decode_on_load=True)


def test_channel_statistics_stream_a_source_in_small_batches():
    """The model's input statistics, taken from up to 10,000 training images, are read batch by batch (at 256 px
    the sample as one float tensor would take 7.9 GB) and equal torch's mean and std of the whole sample."""
    images = torch.randint(0, 256, (150, 3, 6, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    sizes = []

    class Recording(ImageSet):
        def load(self, indices):
            sizes.append(len(indices))
            return super().load(indices)

    mean, std = channel_stats(Recording(images, torch.zeros(150)), max_images=130, batch_size=64)
    assert sizes == [64, 64, 2]
    sample = images[:130].float() / 255
    torch.testing.assert_close(mean, sample.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(std, sample.std(dim=(0, 2, 3)))


def test_random_boxes_follow_random_resized_crop_scale_and_ratio():
    boxes = augment_module.random_boxes(4000, 256, 256, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    area, aspect = h * w / 256 ** 2, w / h
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 256).all() and (left + w <= 256).all()
    assert area.min() > 0.155 and area.max() <= 1 and aspect.min() > 0.74 and aspect.max() < 1.35
    assert 0.5 < area.mean() < 0.6  # uniform share of the area in [0.16, 1], less the draws that do not fit
    assert torch.equal(boxes, augment_module.random_boxes(4000, 256, 256, torch.Generator().manual_seed(0)))
    assert not torch.equal(boxes, augment_module.random_boxes(4000, 256, 256, torch.Generator().manual_seed(1)))


def test_resized_crops_and_centre_crops_equal_torchvisions():
    """The batched crops against torchvision's resized_crop (bilinear, no antialiasing), hflip and center_crop,
    image by image."""
    import_torchvision()
    from torchvision.transforms.v2 import functional as TF
    images = torch.randint(0, 256, (3, 3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0.0, 0, 40, 48], [5, 7, 20, 30], [10, 2, 30, 17]])
    mirror = torch.tensor([False, True, False])
    out = augment_module.resized_crops(images, boxes, 24, mirror)
    for image, (top, left, h, w), flip, got in zip(images, boxes.int().tolist(), mirror, out):
        want = TF.resized_crop(image.float(), top, left, h, w, [24, 24], antialias=False)
        torch.testing.assert_close(got, TF.horizontal_flip(want) if flip else want, atol=1e-3, rtol=0)
    torch.testing.assert_close(augment_module.eval_view(images, 32), TF.center_crop(images, [32, 32]).float() / 255)
    square = images[:, :, :40, :40]
    whole = torch.tensor([[0.0, 0, 40, 40]]).expand(3, 4)
    itself = torch.where(mirror[:, None, None, None], square.flip(-1), square).float()
    torch.testing.assert_close(augment_module.resized_crops(square, whole, 40, mirror), itself, atol=1e-3, rtol=0)


def test_auto_augmentation_is_the_papers_crop_on_cropped_sets_and_weak_elsewhere():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def run(kind, crop):
        return augment_module.augment(images, kind, True, torch.Generator().manual_seed(3), crop)

    assert run("auto", 28).shape == (4, 3, 28, 28)
    assert torch.equal(run("auto", 28), run("retrieval", 28))
    assert torch.equal(run("auto", None), run("weak", None))
    assert torch.equal(run("none", 28), augment_module.eval_view(images, 28))  # the other kinds start centre-cropped


def test_train_on_a_cub_folder_reports_its_recall_at_k(tmp_path, capsys):
    """`weakdml train --method triplet` on a tiny CUB-format folder for one epoch, validated on 2 held-out training
    classes: Recall@1, 2, 4, 8 of the test classes (leave-one-out), which `weakdml evaluate` computes again."""
    write_cub(tmp_path / "data", {c: 4 for c in (1, 2, 3, 4, 5, 101, 102, 103)})
    run = tmp_path / "run"
    assert main(["train", "--dataset", "cub200", "--data-root", str(tmp_path / "data"), "--method", "triplet",
                 "--epochs", "1", "--input-size", str(SIZE), "--labeled-fraction", "1", "--val-classes", "2",
                 "--batch-size", "6", "--m-per-class", "2", "--out", str(run), "--progress", "off"]) == 0
    capsys.readouterr()
    final = json.loads((run / "final_metrics.json").read_text())
    recalls = [final[f"test_recall@{k}"] for k in (1, 2, 4, 8)]
    assert all(0 <= r <= 1 for r in recalls) and recalls == sorted(recalls) and 0 <= final["val_recall@1"] <= 1
    assert main(["evaluate", str(run), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [again[f"test_recall@{k}"] for k in (1, 2, 4, 8)] == pytest.approx(recalls, abs=1e-6)


def test_a_method_trains_on_random_crops_and_embeds_the_centre_crop(tmp_path):
    """On a cropped set the default augmentation is the papers' crop (28 of 32 px here) and every embedding pass
    (evaluation, validation, statistics) sees the centre crop of the stored images."""
    write_cub(tmp_path, {1: 2, 2: 2, 101: 2})
    cfg = build_config(overrides={"dataset": "cub200", "data_root": str(tmp_path), "input_size": SIZE,
                                  "method": "triplet", "labeled_fraction": 1.0, "val_fraction": 0.0})
    data = prepare_data(cfg)
    method = build_method(cfg, METHODS["triplet"], data, torch.device("cpu"))
    images = all_images(data.test)
    method.seed_epoch(0)
    crops = method.view(images)
    method.seed_epoch(0)
    assert crops.shape == (2, 3, 28, 28) and torch.equal(crops, augment_module.random_resized_crop(
        images, 28, True, method.generator) / 255)
    method.eval()
    torch.testing.assert_close(method.embed_all(data.test), method.model(images[:, :, 2:30, 2:30].float() / 255))
