"""Bad input: one clear line (the last on stderr, after any training log), exit status 2, no traceback, and a
finished or checkpointed run is kept."""

import json

import numpy as np
import pytest
from PIL import Image

from weakdml.cli import COMMANDS, main
from weakdml.config import build_config
from weakdml.data.registry import load_dataset
from weakdml.engine.checkpoint import load_checkpoint
from weakdml.methods.nngk import NNGK


def run_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    last = err.splitlines()[-1]
    assert last.startswith("weakdml: error: ") and "Traceback" not in err, err
    return last


def write_folder(root, classes=("a", "b"), n=4):
    for part in ("train", "test"):
        for c in classes:
            (root / part / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / part / c / f"{i}.png")


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "imagenet"], "digits"),
    (["train", "--method", "magic"], "nngk"),
    (["train", "--backbone", "vgg"], "resnet18"),
    (["train", "--labeled-fraction", "0"], "labeled-fraction"),
    (["train", "--labeled-fraction", "1.5"], "labeled-fraction"),
    (["train", "--epochs", "many"], "epochs"),
    (["train", "--from-teacher", "t", "--resume", "r"], "give neither --resume nor --config"),
    (["train", "--from-teacher", "no-such-run"], "not a weakdml run directory"),
    (["train", "--resume", "r", "--config", "c.yaml"], "drop --config"),
    (["train", "--seed", "-1"], "--seed must be in"),
    (["split", "--seed", "99999999999"], "--seed must be in"),
    (["train", "--train-dir", "x", "--test-dir", "y"], "add --dataset folder"),
    (["train", "--optimizer", "sgd", "--momentum", "-1"], "--momentum"),
    (["train", "--milestones", "a"], "a list of int"),
    (["train", "--snapshot-images", "-5"], "--snapshot-images"),
    (["train", "--input-size", "5", "--epochs", "1"], "too small for small-cnn"),
])
def test_bad_flags(capsys, argv, message):
    assert message in run_error(capsys, argv)


def test_unreadable_paths_and_config_files_are_one_line(capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    assert "File exists" in run_error(capsys, ["train", "--out", str(tmp_path / "afile"), "--epochs", "1",
                                               "--progress", "off"])
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    assert "not a text file" in run_error(capsys, ["train", "--config", str(tmp_path / "binary.yaml")])
    (tmp_path / "bad.yaml").write_text("epochs: 3\nlr: [0.1\n")
    assert "line 3" in run_error(capsys, ["train", "--config", str(tmp_path / "bad.yaml")])


def test_missing_dataset_files_say_where_and_how(capsys, tmp_path):
    err = run_error(capsys, ["train", "--dataset", "cifar10", "--data-root", str(tmp_path)])
    assert str(tmp_path) in err and "download" in err.lower()


def test_empty_folder_and_corrupt_image(capsys, tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir(parents=True)
    empty = run_error(capsys, ["train", "--dataset", "folder", "--data-root", str(tmp_path / "empty")])
    assert "has no class subfolders" in empty and str(tmp_path / "empty" / "train") in empty
    write_folder(tmp_path / "bad")
    (tmp_path / "bad" / "train" / "a" / "broken.png").write_bytes(b"not an image at all")
    assert "broken.png" in run_error(capsys, ["train", "--dataset", "folder", "--data-root", str(tmp_path / "bad")])


def test_folder_with_one_class_or_an_empty_class(capsys, tmp_path):
    write_folder(tmp_path / "one", classes=("a",))
    assert "one class" in run_error(capsys, ["train", "--dataset", "folder", "--data-root", str(tmp_path / "one")])
    write_folder(tmp_path / "hole")
    for image in (tmp_path / "hole" / "train" / "b").iterdir():
        image.unlink()
    err = run_error(capsys, ["train", "--dataset", "folder", "--data-root", str(tmp_path / "hole")])
    assert "train/b holds no images" in err


def test_split_that_does_not_match_and_class_without_labels(capsys, tmp_path):
    assert main(["split", "--dataset", "digits", "--seed", "1", "--out", str(tmp_path / "s.json")]) == 0
    write_folder(tmp_path / "f")
    err = run_error(capsys, ["train", "--dataset", "folder", "--data-root", str(tmp_path / "f"),
                             "--split", str(tmp_path / "s.json")])
    assert "does not match" in err
    split = json.loads((tmp_path / "s.json").read_text())
    pool = load_dataset(build_config().data).train.labels
    gone = [i for i in split["labeled"] + split["val"] if pool[i] == 3]
    split["labeled"] = [i for i in split["labeled"] if i not in gone]
    split["val"] = [i for i in split["val"] if i not in gone]
    split["unlabeled"] = sorted(split["unlabeled"] + gone)
    (tmp_path / "s.json").write_text(json.dumps(split))
    assert "no labelled" in run_error(capsys, ["train", "--split", str(tmp_path / "s.json")])
    split["unlabeled"].append(99999)
    (tmp_path / "s.json").write_text(json.dumps(split))
    assert "outside 0..1436" in run_error(capsys, ["train", "--split", str(tmp_path / "s.json")])


def test_resume_of_a_directory_that_is_not_a_run(capsys, tmp_path):
    assert "not a weakdml run" in run_error(capsys, ["train", "--resume", str(tmp_path)])
    assert "not a weakdml run" in run_error(capsys, ["evaluate", str(tmp_path)])


def test_resume_of_a_teacher_student_run_keeps_its_epochs(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--method", "mbdml4", "--epochs", "1", "--nst-threshold", "0.3", "--out", str(run),
                 "--progress", "off", "--snapshot-images", "0"]) == 0
    capsys.readouterr()
    assert "only --nst-rounds may grow" in run_error(capsys, ["train", "--resume", str(run), "--epochs", "3"])
    assert "cannot change lr when resuming" in run_error(capsys, ["train", "--resume", str(run), "--lr", "0.5"])


def test_resume_cannot_take_back_trained_epochs(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--method", "nngk", "--epochs", "2", "--out", str(run), "--progress", "off",
                 "--snapshot-images", "0"]) == 0
    capsys.readouterr()
    assert "has trained 2 epochs" in run_error(capsys, ["train", "--resume", str(run), "--epochs", "1"])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(capsys, tmp_path, monkeypatch):
    original = NNGK.training_step

    def poisoned(self, batch):
        losses = original(self, batch)
        if int(self.head.refreshed_at) >= 1:  # from the second epoch on
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(NNGK, "training_step", poisoned)
    err = run_error(capsys, ["train", "--epochs", "3", "--update-interval", "1", "--out", str(tmp_path / "run"),
                             "--progress", "off"])
    assert "nan" in err and "epoch 2" in err
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 0


def test_evaluate_embeddings_command(capsys, tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    emb = rng.normal(size=(60, 4)) + 8 * np.eye(4)[labels]
    np.save(tmp_path / "e.npy", emb.astype(np.float32))
    np.save(tmp_path / "l.npy", labels)
    assert main(["evaluate-embeddings", str(tmp_path / "e.npy"), str(tmp_path / "l.npy"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    np.save(tmp_path / "words.npy", np.array(["a", "b", "c"] * 20))
    words = str(tmp_path / "words.npy")
    assert "integers" in run_error(capsys, ["evaluate-embeddings", str(tmp_path / "e.npy"), words])
    emb[5, 1] = np.nan
    np.save(tmp_path / "nan.npy", emb)
    assert "NaN" in run_error(capsys, ["evaluate-embeddings", str(tmp_path / "nan.npy"), str(tmp_path / "l.npy")])
    assert metrics["recall@1"] == 1.0 and metrics["nmi"] == pytest.approx(1.0)
    np.save(tmp_path / "short.npy", labels[:10])
    assert "10 entries but there are 60 embeddings" in run_error(
        capsys, ["evaluate-embeddings", str(tmp_path / "e.npy"), str(tmp_path / "short.npy")])
    missing = run_error(capsys, ["evaluate-embeddings", str(tmp_path / "missing.npy"), str(tmp_path / "l.npy")])
    assert "cannot read" in missing and "missing.npy" in missing


def test_a_run_whose_data_moved_is_evaluated_and_resumed_from_the_new_location(capsys, tmp_path):
    write_folder(tmp_path / "data", n=6)
    run = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data-root", str(tmp_path / "data"), "--labeled-fraction", "1",
                 "--epochs", "1", "--out", str(run), "--progress", "off", "--snapshot-images", "0"]) == 0
    (tmp_path / "data").rename(tmp_path / "moved")
    assert "not found" in run_error(capsys, ["evaluate", str(run)])
    assert main(["evaluate", str(run), "--data-root", str(tmp_path / "moved"), "--json"]) == 0
    saved = json.loads((run / "final_metrics.json").read_text())
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == pytest.approx(saved["test_accuracy"], abs=1e-6)
    assert main(["train", "--resume", str(run), "--data-root", str(tmp_path / "moved"), "--epochs", "2",
                 "--progress", "off"]) == 0
    assert build_config(run / "config.yaml").data.data_root == str(tmp_path / "moved")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(capsys, command):
    """`weakdml COMMAND --help` prints every setting (a help text with "%" once broke argparse's formatting)."""
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal's width
    assert out.startswith("usage: weakdml " + command)
    if command == "train":
        assert "after 40, 60 and 80 % of the epochs" in out


@pytest.mark.parametrize("command, method", [("train", "nngk"), ("pretrain", "moco"), ("cluster", "spice")])
def test_help_shows_the_defaults_that_command_applies(capsys, command, method):
    """pretrain and cluster change some of train's defaults (MoCo v2's SGD at 0.03, batch 256): their help says so."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    optimizer, lr, batch = ("adam", "0.001", "32") if command == "train" else ("sgd", "0.03", "256")
    assert f"optimiser (default: {optimizer})" in out and f"--lr X learning rate (default: {lr})" in out
    assert f"(default: {batch}) " in out.rsplit("--batch-size N", 1)[1][:80]  # the description, after the usage
    assert f"(default: {method})" in out.rsplit("--method METHOD", 1)[1][:300]
