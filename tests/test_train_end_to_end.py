"""`weakdml train` end to end on the embedded digits: it learns (beats raw-pixel 1-NN), resumes exactly, and its run
directory is complete and re-evaluable."""

import json

import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from weakdml.cli import main
from weakdml.config import build_config
from weakdml.data.prepare import prepare_data
from weakdml.engine import trainer as trainer_module
from weakdml.engine.checkpoint import load_checkpoint


def raw_pixel_1nn_accuracy(seed: int) -> float:
    """The baseline: 1-nearest neighbour on raw 8x8 pixels over the same labelled images as NNGK's support bank."""
    data = prepare_data(build_config(overrides={"seed": seed, "input_size": 8}))
    flat = lambda s: s.images.reshape(len(s), -1).float().numpy()
    model = KNeighborsClassifier(1).fit(flat(data.train.labeled), data.train.labeled.labels.numpy())
    return model.score(flat(data.test), data.test.labels.numpy())


def test_default_training_beats_raw_pixel_nearest_neighbour(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--progress", "off"]) == 0
    printed = capsys.readouterr().out
    accuracy = float(printed.split("test accuracy:")[1].split()[0])
    baseline = raw_pixel_1nn_accuracy(seed=0)
    assert 0.8 < baseline < 0.95
    assert accuracy >= baseline + 0.03, (accuracy, baseline)
    run = tmp_path / "run"
    for name in ("config.yaml", "split.json", "metrics.csv", "metrics.jsonl", "last.pt", "best.pt",
                 "final_metrics.json", "train.log", "snapshots/epoch_0000.npz"):
        assert (run / name).is_file(), name
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["test_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best_rows = [r for r in rows if r["best"]]
    assert best_rows[-1]["epoch"] == final["best_epoch"]
    assert max(r["val_accuracy"] for r in rows) == pytest.approx(best_rows[-1]["val_accuracy"])
    # evaluate recomputes the same test metrics from the saved best model
    assert main(["evaluate", str(run), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["test_accuracy"] == pytest.approx(final["test_accuracy"], abs=1e-6)
    assert again["test_knn_accuracy"] == pytest.approx(final["test_knn_accuracy"], abs=1e-6)


class Interrupt(Exception):
    pass


def test_resume_reaches_the_same_state_as_an_uninterrupted_run(tmp_path, monkeypatch):
    args = ["train", "--epochs", "6", "--update-interval", "2", "--dropout", "0.2", "--progress", "off"]
    assert main(args + ["--out", str(tmp_path / "straight")]) == 0

    original = trainer_module.MetricsLog.append

    def append_then_crash(self, row):
        original(self, row)
        if row["epoch"] == 2:
            raise Interrupt  # killed after epoch 3's log row, before its last.pt: epoch 3 is repeated

    monkeypatch.setattr(trainer_module.MetricsLog, "append", append_then_crash)
    with pytest.raises(Interrupt):
        main(args + ["--out", str(tmp_path / "broken")])
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "broken" / "last.pt")["epoch"] == 1
    assert main(["train", "--resume", str(tmp_path / "broken"), "--progress", "off"]) == 0

    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "broken" / "last.pt")
    assert a["epoch"] == b["epoch"] == 5
    for key, value in a["method"].items():
        assert torch.equal(value, b["method"][key]), key
    rows = lambda run: [json.loads(l) for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows("broken")] == list(range(6))
    assert [r["val_accuracy"] for r in rows("broken")] == [r["val_accuracy"] for r in rows("straight")]
