"""Bad input and faults (issue 14): each gives one clear line and a non-zero exit, runs nothing from a data folder,
destroys no image, and loses nothing the user or an earlier epoch wrote."""

import dataclasses
import errno
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_cli_errors import run_error, write_folder
from tiny import Interrupt, metric_rows

from weakdml.cli import main
from weakdml.config import build_config, same_setting
from weakdml.data.augment import random_crop_flip
from weakdml.data.images import read_images
from weakdml.data.splits import Split, make_split
from weakdml.engine import checkpoint, trainer
from weakdml.engine.checkpoint import load_checkpoint
from weakdml.engine.run import _changed_settings
from weakdml.errors import UserError
from weakdml.evaluation import evaluate_embeddings, knn_search

SRC = str(Path(__file__).resolve().parents[1] / "src")
QUICK = ["--progress", "off", "--snapshot-images", "0", "--input-size", "8", "--width", "0.5"]


def train_argv(out: Path, *extra: str, epochs: int = 1) -> list[str]:
    return ["train", "--epochs", str(epochs), "--out", str(out), *QUICK, *extra]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# -------------------------------------------------------------------------------- 1. no code runs from a data folder
def test_a_crafted_cifar_pickle_runs_nothing(capsys, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "labels": [0, 1]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran')",)

    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Payload(), "labels": [0]}, protocol=2))
    err = run_error(capsys, ["train", "--dataset", "cifar10", "--data-root", str(tmp_path), "--epochs", "1"])
    assert "data_batch_1" in err and "builtin__.exec" in err and not marker.exists()
    pickle.loads((folder / "data_batch_1").read_bytes())  # the file is live: plain unpickling runs it
    assert marker.read_text() == "ran"


# ------------------------------------------------------------------------ 2. 16-bit, float, alpha and EXIF images
def test_sixteen_bit_and_float_images_are_scaled_by_their_range(tmp_path):
    gradient = np.linspace(1000, 4000, 64, dtype=np.uint16).reshape(8, 8)  # 12 bits used of 16
    Image.fromarray(gradient).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    floats = np.linspace(-0.5, 0.25, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(floats).save(tmp_path / "float.tif")
    Image.fromarray(np.full((8, 8), 3000, np.uint16)).save(tmp_path / "constant.png")
    deep, flt, constant = read_images([tmp_path / "deep.png", tmp_path / "float.tif", tmp_path / "constant.png"])
    for image, values in ((deep, gradient), (flt, floats)):
        expected = np.round((values - values.min()) / (values.max() - values.min()) * 255)
        assert np.array_equal(image[0].numpy(), expected.astype(np.uint8))  # was all 255 (16-bit) or all 0 (float)
    assert constant.max() == 0


def test_transparent_pixels_are_composited_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128  # half-transparent red
    rgba[0, 0] = (0, 0, 255, 0)  # a fully transparent blue pixel
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    black, alpha = Image.new("L", (4, 4), 0), Image.new("L", (4, 4), 64)
    Image.merge("LA", (black, alpha)).save(tmp_path / "la.png")  # black at alpha 64
    (colour,) = read_images([tmp_path / "rgba.png"])
    assert colour[:, 1, 1].tolist() == [255, 127, 127] and colour[:, 0, 0].tolist() == [255, 255, 255]
    (grey,) = read_images([tmp_path / "la.png"])
    assert grey.shape == (1, 4, 4) and grey.unique().tolist() == [191]  # 255 * (1 - 64/255)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((8, 16), np.uint8)
    pixels[:, :8] = 255  # stored: 16 wide, 8 high, left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    (upright,) = read_images([tmp_path / "turned.jpg"])
    assert upright.shape == (1, 16, 8)  # shown 8 wide, 16 high: the white half on top
    assert upright[0, :7].float().mean() > 240 and upright[0, 9:].float().mean() < 15


# ---------------------------------------------------------------------------------- 3. one process per run folder
@contextmanager
def holder(folder: Path):
    """Another process that holds ``folder``'s lock until the block ends (then it is killed: a stale lock)."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {SRC!r})
        from weakdml.engine.run_folder import locked_run_folder
        with locked_run_folder(Path({str(folder)!r})):
            print("holding", flush=True)
            time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "holding"
        yield process.pid
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_a_second_training_in_the_same_folder_is_refused_and_a_dead_holder_is_taken_over(capsys, tmp_path):
    run = tmp_path / "run"
    with holder(run) as pid:
        err = run_error(capsys, train_argv(run))
        assert "is in use" in err and f"process {pid}" in err
        assert sorted(p.name for p in run.iterdir()) == ["run.lock"]
    assert main(train_argv(run)) == 0  # the holder died without unlocking
    assert (run / "run.lock").read_text().startswith(f"process {os.getpid()} ")


# -------------------------------------------------------------------------------- 4. the user's own folder is kept
def test_out_of_a_folder_that_is_not_a_run_is_refused_unless_forced(capsys, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "config.yaml").write_text("epochs: 1  # my notes\n")
    (project / "metrics.csv").write_text("epoch,accuracy\n0,0.5\n")
    before = files_of(project)
    err = run_error(capsys, train_argv(project, "--config", str(project / "config.yaml")))
    assert "not a weakdml run directory" in err and "--force" in err
    assert files_of(project) == before
    assert main(train_argv(project, "--force")) == 0
    assert (project / "last.pt").is_file() and main(train_argv(tmp_path / "fresh")) == 0


# --------------------------------------------------------------------------------------- 5. writes survive a crash
def test_a_torn_metrics_line_is_skipped_by_plot_and_cut_off_by_resume(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(train_argv(run)) == 0
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 1, "stage": 0, "train_lo')  # an append cut short
    assert main(["plot", str(run), "--what", "curves", "--out", str(tmp_path / "plots")]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2", "--progress", "off"]) == 0
    assert [row["epoch"] for row in metric_rows(run)] == [0, 1]
    assert (run / "metrics.csv").read_text().count("\n") == 3  # header and two rows


def test_a_rerun_after_a_failed_first_epoch_does_not_append_to_its_rows(capsys, tmp_path, monkeypatch):
    real_save = trainer.save_atomic

    def crash_at_last(state, path):
        if path.name == "last.pt":
            raise Interrupt  # after the first row was logged, before its checkpoint
        real_save(state, path)

    monkeypatch.setattr(trainer, "save_atomic", crash_at_last)
    with pytest.raises(Interrupt):
        main(train_argv(tmp_path / "run"))
    assert len(metric_rows(tmp_path / "run")) == 1
    monkeypatch.setattr(trainer, "save_atomic", real_save)
    assert main(train_argv(tmp_path / "run", epochs=2)) == 0  # the same command again
    assert [row["epoch"] for row in metric_rows(tmp_path / "run")] == [0, 1]


def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(capsys, tmp_path, monkeypatch):
    real_writer = checkpoint.atomic_writer
    writes = []

    @contextmanager
    def filling_disk(path, mode="w"):
        with real_writer(path, mode) as handle:
            if path.name == "last.pt":
                writes.append(path)
            if len(writes) == 2:  # the second epoch's checkpoint: half of it fits
                handle.write(b"x" * 1000)
                raise OSError(errno.ENOSPC, "No space left on device", str(path) + ".tmp")
            yield handle

    monkeypatch.setattr(checkpoint, "atomic_writer", filling_disk)
    run = tmp_path / "run"
    err = run_error(capsys, train_argv(run, epochs=3))
    assert "No space left on device" in err and "free disk space" in err and "--resume" in err
    assert load_checkpoint(run / "last.pt")["epoch"] == 0 and not (run / "last.pt.tmp").exists()
    monkeypatch.setattr(checkpoint, "atomic_writer", real_writer)
    assert main(["train", "--resume", str(run), "--progress", "off"]) == 0
    assert [row["epoch"] for row in metric_rows(run)] == [0, 1, 2]


def test_compare_counts_a_run_with_damaged_final_metrics_as_unfinished_and_mends_it(capsys, tmp_path):
    study = tmp_path / "study"
    argv = ["compare", "--methods", "nngk", "--seeds", "0", "--out", str(study), "--epochs", "1", *QUICK]
    assert main(argv) == 0
    final = study / "runs" / "nngk-s0" / "final_metrics.json"
    good = json.loads(final.read_text())
    final.write_text(final.read_text()[:40])  # torn
    capsys.readouterr()
    assert main(["compare", "--out", str(study), "--table-only"]) == 0
    _out, err = capsys.readouterr()
    assert "damaged" in err and "counts as unfinished" in err and "Traceback" not in err
    assert main(argv) == 0  # running the comparison again evaluates the run anew
    assert json.loads(final.read_text())["test_accuracy"] == good["test_accuracy"]


def _kill_at_second_checkpoint(run: Path) -> subprocess.CompletedProcess:
    """`weakdml train` in another process, killed (SIGKILL) half-way through writing its second last.pt."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {SRC!r})
        from weakdml.engine import checkpoint
        real, writes = checkpoint.atomic_writer, []

        class Dying:
            def __init__(self, handle):
                self.handle = handle

            def write(self, data):
                self.handle.write(bytes(data)[: len(data) // 2])
                self.handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        from contextlib import contextmanager

        @contextmanager
        def dying_writer(path, mode="w"):
            with real(path, mode) as handle:
                writes.append(path.name)
                yield Dying(handle) if writes.count("last.pt") == 2 and path.name == "last.pt" else handle

        checkpoint.atomic_writer = dying_writer
        from weakdml.cli import main
        main({train_argv(run, epochs=2)!r})
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)


def _cli_on_one_thread(argv: list[str]) -> int:
    """`weakdml ARGV` in another process with one thread, as the killed run: the same summation order."""
    code = f"import sys; sys.path.insert(0, {SRC!r}); from weakdml.cli import main; sys.exit(main({argv!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode


def test_training_killed_while_writing_a_checkpoint_resumes_to_the_uninterrupted_result(capsys, tmp_path):
    killed = _kill_at_second_checkpoint(tmp_path / "killed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / "killed" / "last.pt.tmp").is_file()  # the torn write, beside the intact checkpoint
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 0
    assert _cli_on_one_thread(["train", "--resume", str(tmp_path / "killed"), "--progress", "off"]) == 0
    assert _cli_on_one_thread(train_argv(tmp_path / "whole", epochs=2)) == 0
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in metric_rows(tmp_path / "killed")]
    assert rows == [{k: v for k, v in row.items() if k != "seconds"} for row in metric_rows(tmp_path / "whole")]
    assert not (tmp_path / "killed" / "last.pt.tmp").exists()


# ------------------------------------------------------------------------------------------ 6. non-square images
def test_non_square_images_train_or_are_refused_in_one_line(capsys, tmp_path):
    for name, (height, width) in {"tall": (80, 8), "wide": (8, 80), "flat": (4, 64)}.items():
        for part in ("train", "test"):
            for c in ("a", "b"):
                (tmp_path / name / part / c).mkdir(parents=True)
                for i in range(3):
                    pixels = np.random.default_rng(i).integers(0, 256, (height, width), dtype=np.uint8)
                    Image.fromarray(pixels).save(tmp_path / name / part / c / f"{i}.png")
    for name in ("tall", "wide"):
        assert main(["train", "--dataset", "folder", "--data-root", str(tmp_path / name), "--labeled-fraction", "1",
                     "--epochs", "1", "--out", str(tmp_path / f"run-{name}"), "--progress", "off",
                     "--snapshot-images", "0"]) == 0
    err = run_error(capsys, ["train", "--dataset", "folder", "--data-root", str(tmp_path / "flat"), "--out",
                             str(tmp_path / "run-flat")])
    assert "4 x 64 px" in err and "--input-size" in err and not (tmp_path / "run-flat").exists()


def test_random_crop_pads_each_side_by_its_own_eighth():
    images = torch.arange(80.0 * 8).view(1, 1, 80, 8).repeat(64, 1, 1, 1)  # values grow by 8 a row, 1 a column
    out = random_crop_flip(images, flip=False, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    moved = out[:, 0, 40, 4] - images[0, 0, 40, 4]  # (64,) 8 * row shift + column shift
    rows = (moved / 8).round()
    assert rows.abs().max() == 10 and (moved - 8 * rows).abs().max() == 1  # up to 80 // 8 and 8 // 8 pixels


# ------------------------------------------------------------------------------------------- 7. split files checked
SPLIT = make_split("digits", torch.arange(30) % 3, 0, 0.5, images=torch.zeros(30, 1, 2, 2, dtype=torch.uint8))


def _split_file(tmp_path: Path, **changes) -> Path:
    raw = {"format": 2, **dataclasses.asdict(SPLIT), **changes}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"labeled": ["1", "2"]}, "list of image indices"),
    ({"labeled": None}, "list of image indices"),
    ({"val": [1.0]}, "list of image indices"),
    ({"val": [True]}, "list of image indices"),
    ({"format": 7}, "unknown format 7"),
    ({"format": "2"}, "unknown format '2'"),
    ({"format": None}, "unknown format None"),
    ({"unlabeled": SPLIT.unlabeled + SPLIT.labeled[:1]}, "repeats images"),
    ({"val": SPLIT.val + SPLIT.labeled[-1:]}, "repeats images"),
    ({"labeled": [3, 3]}, "repeats images"),
    ({"unlabeled": [30]}, "outside 0..29"),
    ({"unlabeled": [-1]}, "outside 0..29"),
    ({"seed": -1}, "'seed' must be a non-negative integer"),
    ({"pool_size": "30"}, "'pool_size' must be a non-negative integer"),
    ({"dataset": 3}, "must be text"),
    ({"images_fingerprint": None}, "'images_fingerprint' must be text"),
    ({"classes_held_out": [1]}, "unknown field(s) classes_held_out"),
])
def test_split_files_are_validated_field_by_field(tmp_path, changes, message):
    with pytest.raises(UserError) as caught:
        Split.load(_split_file(tmp_path, **changes))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_overlapping_split_is_refused_by_train_in_one_line(capsys, tmp_path):
    assert main(["split", "--dataset", "digits", "--out", str(tmp_path / "s.json")]) == 0
    raw = json.loads((tmp_path / "s.json").read_text())
    raw["unlabeled"].append(raw["val"][0])  # a validation image also unlabelled
    (tmp_path / "s.json").write_text(json.dumps(raw))
    assert "repeats images" in run_error(capsys, ["train", "--split", str(tmp_path / "s.json")])
    del raw["labeled"]
    (tmp_path / "s.json").write_text(json.dumps(raw))
    assert "lacks labeled" in run_error(capsys, ["train", "--split", str(tmp_path / "s.json")])


# ---------------------------------------------------------------------------- 8. the fingerprint covers the images
def test_other_images_with_the_same_labels_are_refused_and_old_splits_still_accepted(capsys, tmp_path):
    write_folder(tmp_path / "data", n=6)
    run = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data-root", str(tmp_path / "data"), "--labeled-fraction", "1",
                 "--epochs", "1", "--out", str(run), "--progress", "off", "--snapshot-images", "0"]) == 0
    image = tmp_path / "data" / "train" / "a" / "0.png"
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(image)  # other pixels, same file list and labels
    assert "other images" in run_error(capsys, ["evaluate", str(run)])
    assert "other images" in run_error(capsys, ["train", "--resume", str(run), "--epochs", "2"])
    raw = json.loads((run / "split.json").read_text())
    del raw["images_fingerprint"]
    (run / "split.json").write_text(json.dumps(raw | {"format": 1}))  # as weakdml wrote it before
    assert main(["evaluate", str(run), "--json"]) == 0


# ---------------------------------------------------------------------------------------- 9. values to be refused
@pytest.mark.parametrize("argv, message", [
    (["--gamma", "-1"], "--gamma must be positive"),
    (["--gamma", "0"], "--gamma must be positive"),
    (["--sigma", "inf"], "'sigma' must be a finite number"),
    (["--triplet-margin", "nan"], "'triplet_margin' must be a finite number"),
    (["--lr=-inf"], "'lr' must be a finite number"),
    (["--milestones", "3,-1"], "--milestones must be epochs"),
])
def test_bad_numbers_are_refused(capsys, argv, message):
    assert message in run_error(capsys, ["train", *argv])


@pytest.mark.parametrize("text, message", [
    ("epochs: true\n", "'epochs' expects int, got True"),
    ("optim:\n  lr: .nan\n", "'lr' must be a finite number"),
    ("milestones: [2, false]\n", "'milestones' expects a list of int"),
    ("labeled_fraction: yes\n", "'labeled_fraction' expects float"),
])
def test_yaml_booleans_and_nan_are_refused(capsys, tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    assert message in run_error(capsys, ["train", "--config", str(tmp_path / "c.yaml")])


def test_labels_per_class_above_a_class_size_says_so(capsys, tmp_path):
    assert main(["split", "--dataset", "digits", "--labels-per-class", "180", "--out", str(tmp_path / "s.json")]) == 0
    err = capsys.readouterr().err
    assert "--labels-per-class 180 is more than" in err and "10 class(es) hold" in err and "0 (142), 1 (146)" in err


def test_equal_nans_are_no_change_of_settings():
    saved, given = build_config(), build_config()
    saved.nngk.sigma = given.nngk.sigma = math.nan  # as a config saved before NaN was refused held it
    assert same_setting(math.nan, math.nan) and not same_setting(math.nan, 0.3)
    assert _changed_settings(saved, given, ()) == []
    given.nngk.sigma = 0.3
    assert _changed_settings(saved, given, ()) == ["sigma"]


# ---------------------------------------------------------------------------------------------- 10. clear messages
def test_a_non_finite_loss_says_what_was_kept_and_what_to_change(capsys, tmp_path, monkeypatch):
    from weakdml.methods.classifier import CrossEntropy
    from weakdml.methods.nngk import NNGK

    nngk_step, cross_entropy_step = NNGK.training_step, CrossEntropy.training_step

    def nngk_from_its_second_epoch(self, batch):
        losses = nngk_step(self, batch)
        return losses | {"loss": losses["loss"] * math.nan} if int(self.head.refreshed_at) >= 1 else losses

    monkeypatch.setattr(NNGK, "training_step", nngk_from_its_second_epoch)
    monkeypatch.setattr(CrossEntropy, "training_step",
                        lambda self, batch: cross_entropy_step(self, batch) | {
                            "loss": cross_entropy_step(self, batch)["loss"] * math.inf})
    err = run_error(capsys, train_argv(tmp_path / "nngk", "--update-interval", "1", epochs=2))
    assert "the loss became nan at epoch 2" in err and "checkpoint after epoch 1 is kept" in err
    assert "start a new run with a lower --lr or another --sigma" in err
    err = run_error(capsys, train_argv(tmp_path / "ce", "--method", "cross-entropy", epochs=2))
    assert "the loss became inf at epoch 1" in err and "no checkpoint had been written yet" in err
    assert err.endswith("start a new run with a lower --lr")


def test_a_text_file_named_npy_is_not_called_a_pickle(capsys, tmp_path):
    (tmp_path / "e.npy").write_text("1 2 3\n4 5 6\n")
    np.save(tmp_path / "l.npy", np.arange(2))
    err = run_error(capsys, ["evaluate-embeddings", str(tmp_path / "e.npy"), str(tmp_path / "l.npy")])
    assert "is not a .npy file" in err and "pickle" not in err


def test_os_errors_say_what_to_do(capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    err = run_error(capsys, train_argv(tmp_path / "afile"))
    assert "File exists" in err and "remove it or choose another path" in err and "[Errno" not in err


def test_a_checkpoint_of_another_architecture_is_one_line(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(train_argv(run)) == 0
    settings = yaml.safe_load((run / "config.yaml").read_text())
    settings["model"]["embedding_dim"] = 32  # as if best.pt came from another run
    (run / "config.yaml").write_text(yaml.safe_dump(settings))
    err = run_error(capsys, ["evaluate", str(run)])
    assert "was saved from another model" in err and "of another shape" in err
    assert len(capsys.readouterr().err.strip().splitlines()) <= 1


def test_an_out_that_is_not_utf8_is_one_line(capsys, tmp_path):
    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/run-\xff")
    assert "not valid UTF-8" in run_error(capsys, train_argv(Path(out)))


def test_an_input_size_beyond_the_memory_is_refused_before_allocating(capsys, monkeypatch):
    monkeypatch.setattr("weakdml.data.memory.available_memory", lambda: 8 * 2**30)
    started = time.perf_counter()
    err = run_error(capsys, ["train", "--input-size", "4000"])
    assert "need 26.8 GB of memory, but 8.0 GB is available; lower --input-size" in err
    assert time.perf_counter() - started < 10


# ---------------------------------------------------------------------------------------- 11. metrics at any scale
@pytest.mark.parametrize("scale", [1e25, 1e-25])
def test_neighbours_and_metrics_do_not_depend_on_the_scale(scale):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(120) % 4
    emb = torch.randn(120, 8, generator=g) + 2 * torch.eye(8)[labels]
    _, reference = knn_search(emb, emb, 10, exclude_self=True)
    _, scaled = knn_search(emb * scale, emb * scale, 10, exclude_self=True)
    assert torch.equal(scaled, reference)
    assert evaluate_embeddings(emb * scale, labels) == pytest.approx(evaluate_embeddings(emb, labels))
    assert evaluate_embeddings(emb[:60] * scale, labels[:60], emb[60:] * scale, labels[60:]) == pytest.approx(
        evaluate_embeddings(emb[:60], labels[:60], emb[60:], labels[60:]))
