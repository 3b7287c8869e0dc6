"""Figures of `weakdml plot` from a tiny real run: each file is written and is a valid image of a sensible size."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from tiny import metric_rows

from weakdml.cli import main
from weakdml.config import build_config
from weakdml.engine import run as run_module
from weakdml.engine.run import train
from weakdml.plots import make_plots
from weakdml.plots import tsne as tsne_module
from weakdml.plots.curves import plot_curves, round_starts
from weakdml.plots.runs import RunInfo, find_runs, first_of_each_method
from weakdml.plots.tsne import align, pick_frames, tsne_2d

EPOCHS = 3


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plots") / "run"
    train(build_config(overrides={"method": "mbdml3", "epochs": EPOCHS, "out": str(out), "progress": "off",
                                  "snapshot_images": 200}))
    return out


def fake_run(run_dir: Path, target: Path, method: str, seed: int, drop_train_accuracy: bool = False) -> Path:
    """A copy of a run's config and metrics under another method/seed (enough for curves)."""
    target.mkdir(parents=True)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["train"].update(method=method, seed=seed)
    (target / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = metric_rows(run_dir)
    for row in rows:
        row["test_accuracy"] = min(1.0, row["test_accuracy"] + 0.05 * (seed + 1))
        if drop_train_accuracy:
            row.pop("train_accuracy", None)
    (target / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return target


def assert_image(path: Path, kind: str, min_size: tuple[int, int] = (400, 300), frames: int = 1) -> None:
    assert path.is_file(), path
    with Image.open(path) as image:
        assert image.format == kind
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], image.size
        assert getattr(image, "n_frames", 1) == frames
    with Image.open(path) as image:
        image.verify()


def test_tsne_keeps_separated_clusters_apart():
    """Three well-separated 8-d blobs stay separated in 2-D (1-NN leave-one-out accuracy 1), also when continued from
    the previous coordinates (as the animated t-SNE's frames are)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 8)) + 12 * np.eye(8)[labels]
    first = tsne_2d(x, seed=0)
    for xy in (first, tsne_2d(x, seed=0, init=first, iterations=500)):
        assert xy.shape == (60, 2) and np.isfinite(xy).all()
        d = ((xy[:, None] - xy[None]) ** 2).sum(-1) + np.diag(np.full(60, np.inf))
        assert (labels[d.argmin(1)] == labels).all()


def test_align_undoes_rotation_reflection_scale_and_shift():
    reference = np.random.default_rng(1).normal(size=(50, 2))
    turn = np.array([[0.0, -1.0], [-1.0, 0.0]])  # a reflection across a diagonal
    moved = 7 * reference @ turn + 3
    np.testing.assert_allclose(align(moved, align(reference)), align(reference), atol=1e-9)


def test_pick_frames_keeps_first_and_last_and_at_most_the_maximum():
    assert pick_frames(3, 20) == [0, 1, 2]
    frames = pick_frames(200, 20)
    assert len(frames) == 20 and frames[0] == 0 and frames[-1] == 199


def test_plot_writes_every_figure_of_a_run(run_dir, tmp_path, capsys):
    out = tmp_path / "figures"
    assert main(["plot", str(run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    expected = [out / "curves-digits.png", out / "run-tsne.png", out / "run-tsne.gif", out / "run-feature-spaces.png"]
    assert printed == [str(p) for p in expected]
    assert_image(expected[0], "PNG", (800, 250))
    assert_image(expected[1], "PNG")
    assert_image(expected[2], "GIF", frames=EPOCHS)
    assert_image(expected[3], "PNG", (900, 800))


def test_the_animation_alone_takes_class_names_from_the_run_without_loading_data_or_model(run_dir, tmp_path,
                                                                                          monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    names = [str(c) for c in range(10)]  # digits' classes, as the run recorded them
    assert json.loads((run / "classes.json").read_text()) == names
    seen = {}

    def record(run_dir, path, class_names=None, *args, **kwargs):
        seen["class_names"] = class_names
        return path

    def fail(*_, **__):
        raise AssertionError("the animation needs neither the data nor the model")

    monkeypatch.setattr(tsne_module, "animate_tsne", record)
    monkeypatch.setattr(run_module, "load_run", fail)
    assert make_plots([run], tmp_path / "out", what=["gif"]) == [tmp_path / "out" / "run-tsne.gif"]
    assert seen["class_names"] == names
    (run / "classes.json").unlink()  # a run that recorded none: the animation numbers the classes
    make_plots([run], tmp_path / "out", what=["gif"])
    assert seen["class_names"] is None


def test_curves_of_two_methods_and_seeds(run_dir, tmp_path):
    runs = [*find_runs(run_dir),
            *find_runs(fake_run(run_dir, tmp_path / "b", "mbdml3", seed=1)),
            *find_runs(fake_run(run_dir, tmp_path / "c", "nngk", seed=0, drop_train_accuracy=True))]
    assert_image(plot_curves(runs, tmp_path / "curves.png"), "PNG", (800, 250))


def test_round_starts_are_the_first_epochs_of_later_stages_over_all_runs():
    def run(stages: list[int]) -> RunInfo:
        return RunInfo(Path("r"), "mbdml4", "digits", 0, [{"epoch": e, "stage": s} for e, s in enumerate(stages)])

    assert round_starts([run([0, 0, 1, 1, 2]), run([0, 1, 1, 2, 2, 3]), run([0, 0])]) == {2: 1, 4: 2, 1: 1, 3: 2,
                                                                                         5: 3}
    assert round_starts([RunInfo(Path("r"), "nngk", "digits", 0, [{"epoch": 0}, {"epoch": 1}])]) == {}


def test_comparison_directory_draws_curves_of_all_runs_and_picks_the_first_seed(run_dir, tmp_path):
    study = tmp_path / "study"
    fake_run(run_dir, study / "runs" / "mbdml3-s1", "mbdml3", seed=1)
    fake_run(run_dir, study / "runs" / "nngk-s0", "nngk", seed=0)
    shutil.copytree(run_dir, study / "runs" / "mbdml3-s0", ignore=shutil.ignore_patterns("*.pt", "snapshots"))
    runs = find_runs(study)
    assert len(runs) == 3
    assert [(r.method, r.seed) for r in first_of_each_method(runs)] == [("mbdml3", 0), ("nngk", 0)]
    assert make_plots([study], what=["curves"]) == [study / "plots" / "curves-digits.png"]
    assert_image(study / "plots" / "curves-digits.png", "PNG", (800, 250))


@pytest.mark.parametrize("case", ["missing", "not-a-run", "empty-metrics", "bad-what"])
def test_bad_input_is_one_line_user_error(run_dir, tmp_path, capsys, case):
    target, extra = tmp_path / "dir", []
    if case != "missing":
        target.mkdir()
    if case == "empty-metrics":
        shutil.copy(run_dir / "config.yaml", target / "config.yaml")
        (target / "metrics.jsonl").write_text("")
    if case == "bad-what":
        target, extra = run_dir, ["--what", "curves,histogram"]
    assert main(["plot", str(target), *extra, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("weakdml: error:") and "\n" not in error
    assert {"missing": "does not exist", "not-a-run": "neither a weakdml run directory",
            "empty-metrics": "has no metrics yet", "bad-what": "unknown figure kind(s) histogram"}[case] in error
    assert not (tmp_path / "out").exists()
