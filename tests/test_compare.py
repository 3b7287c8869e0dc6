"""`weakdml compare`: the table's statistics against hand-computed values, seed parsing, and a tiny study on the
embedded digits that skips finished runs and resumes interrupted ones."""

import csv
import json
import math

import pytest
from scipy.stats import ttest_ind
from tiny import Interrupt

from weakdml.cli import main
from weakdml.engine import compare as compare_module
from weakdml.engine import run as run_module
from weakdml.engine import trainer as trainer_module
from weakdml.errors import UserError
from weakdml.evaluation.tables import MethodRow, SeedResult, mean_std, rank, to_csv, to_latex, to_markdown, to_summary


def make_row(method, accuracies, missing=()):
    return MethodRow(method, [SeedResult(i, a, a - 1, 60.0) for i, a in enumerate(accuracies)], list(missing))


def test_mean_and_sample_std():
    assert mean_std([94.0, 96.0, 98.0]) == (96.0, 2.0)  # deviations -2, 0, 2: variance 8 / (3 - 1) = 4
    mean, std = mean_std([93.0])
    assert mean == 93.0 and math.isnan(std)
    assert all(math.isnan(x) for x in mean_std([]))


def test_best_is_bold_and_welch_ties_are_marked():
    best, close, far, single, empty = rows = [
        make_row("a", [94.0, 96.0, 98.0]),  # mean 96, std 2: the best
        make_row("b", [93.0, 95.0]),        # mean 94: within the noise of a
        make_row("c", [80.0, 81.0, 82.0]),  # mean 81, std 1: clearly worse
        make_row("d", [50.0]),              # one seed: never tested
        make_row("e", [], missing=[0, 1]),  # nothing finished yet
    ]
    rank(rows)
    assert [r.best for r in rows] == [True, False, False, False, False] and best.p_value is None
    p_close = ttest_ind([93.0, 95.0], [94.0, 96.0, 98.0], equal_var=False).pvalue
    p_far = ttest_ind([80.0, 81.0, 82.0], [94.0, 96.0, 98.0], equal_var=False).pvalue
    assert p_close >= 0.05 > p_far
    assert close.p_value == pytest.approx(p_close) and close.tied
    assert far.p_value == pytest.approx(p_far) and not far.tied
    assert single.p_value is None and not single.tied and not empty.tied

    markdown = to_markdown(rows)
    assert "| a | **96.00 ± 2.00** | 3 |" in markdown
    assert "| b | 94.00 ± 1.41 † | 2 |" in markdown
    assert "| c | 81.00 ± 1.00 | 3 |" in markdown
    assert "| d | 50.00 | 1 |" in markdown
    assert "| e | — | 0 |" in markdown
    assert "Welch's t-test, p ≥ 0.05" in markdown and "e (seeds 0, 1)" in markdown
    latex = to_latex(rows)
    assert r"\textbf{96.00 $\pm$ 2.00}" in latex and r"94.00 $\pm$ 1.41$^\dagger$" in latex
    assert r"\toprule" in latex and r"\bottomrule" in latex
    table = list(csv.DictReader(to_csv(rows).splitlines()))
    assert [r["method"] for r in table] == ["a", "b", "c", "d", "e"]
    assert table[1]["test_accuracy_std"] == f"{math.sqrt(2):.4f}" and table[1]["tied_with_best"] == "1"
    summary = to_summary(rows)["methods"]
    assert summary["a"]["test_accuracy"] == {"mean": 96.0, "std": 2.0, "per_seed": {"0": 94.0, "1": 96.0, "2": 98.0}}
    assert summary["d"]["test_accuracy"]["std"] is None and summary["e"]["missing_seeds"] == [0, 1]


def test_parse_seeds_and_methods():
    assert compare_module.parse_seeds("0-9") == list(range(10))
    assert compare_module.parse_seeds("0,3,5") == [0, 3, 5]
    assert compare_module.parse_seeds("3") == [3]
    assert compare_module.parse_seeds("0-2, 7,1") == [0, 1, 2, 7]
    for bad in ("", "a", "5-2", "1,,2", "-3"):
        with pytest.raises(UserError, match="--seeds expects e.g. 0-9, 0,3,5 or 3; cannot read"):
            compare_module.parse_seeds(bad)
    assert compare_module.parse_methods("mixup,nngk") == ["mixup", "nngk"]
    with pytest.raises(UserError, match="unknown method.*nope.*choose from.*nngk"):
        compare_module.parse_methods("nngk,nope")



def test_compare_end_to_end_skips_finished_and_resumes_interrupted(tmp_path, monkeypatch, capsys):
    out = tmp_path / "study"
    args = ["compare", "--methods", "nngk,cross-entropy", "--seeds", "0-1", "--epochs", "1", "--input-size", "8",
            "--snapshot-images", "0", "--progress", "off", "--out", str(out)]
    # An unknown method fails before anything is trained.
    assert main(args[:2] + ["nngk,bogus"] + args[3:]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert not out.exists()

    # First invocation: killed in nngk seed 1 right after its (only) epoch's checkpoint, before its final metrics.
    # (One epoch keeps the test fast; resuming mid-training exactly is tested in test_train_end_to_end.)
    original = trainer_module.save_atomic

    def save_then_crash(state, path):
        original(state, path)
        if path.name == "last.pt" and path.parent.name == "nngk-s1":  # nngk-s0 has finished
            raise Interrupt

    monkeypatch.setattr(trainer_module, "save_atomic", save_then_crash)
    with pytest.raises(Interrupt):
        main(args)
    monkeypatch.undo()
    runs = out / "runs"
    assert (runs / "nngk-s0" / "final_metrics.json").is_file()
    assert (runs / "nngk-s1" / "last.pt").is_file() and not (runs / "nngk-s1" / "final_metrics.json").exists()

    # The table of a study still going lists what is missing.
    assert main(["compare", "--table-only", "--methods", "nngk,cross-entropy", "--seeds", "0-1",
                 "--out", str(out)]) == 0
    assert "nngk (seeds 1); cross-entropy (seeds 0, 1)" in (out / "table.md").read_text()

    # Second invocation: resumes nngk-s1, trains the cross-entropy runs, skips nngk-s0.
    calls = []
    train, resume = run_module.train, run_module.resume
    monkeypatch.setattr(run_module, "train", lambda cfg: calls.append(("train", cfg.train.out)) or train(cfg))
    monkeypatch.setattr(run_module, "resume", lambda d, o=None: calls.append(("resume", str(d))) or resume(d, o))
    assert main(args) == 0
    assert calls == [("resume", str(runs / "nngk-s1")), ("train", str(runs / "cross-entropy-s0")),
                     ("train", str(runs / "cross-entropy-s1"))]
    for name in ("table.md", "table.csv", "table.tex", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())["methods"]
    assert list(summary) == ["nngk", "cross-entropy"]
    for method in summary:
        final = json.loads((runs / f"{method}-s1" / "final_metrics.json").read_text())
        assert summary[method]["n"] == 2 and summary[method]["missing_seeds"] == []
        assert summary[method]["test_accuracy"]["per_seed"]["1"] == pytest.approx(100 * final["test_accuracy"])
    assert "**" in capsys.readouterr().out

    # Third invocation: everything is finished, nothing is trained.
    def fail(*_, **__):
        raise AssertionError("a finished study must not train")

    monkeypatch.setattr(run_module, "train", fail)
    monkeypatch.setattr(run_module, "resume", fail)
    assert main(args) == 0
    # Other settings in the same folder would mix two studies in one table.
    assert main(args + ["--lr", "0.01"]) == 2
    assert "other settings: lr=0.001 (now 0.01)" in capsys.readouterr().err
    # A table put together from runs of other settings (by hand, or a run extended) says so.
    config = runs / "cross-entropy-s1" / "config.yaml"
    config.write_text(config.read_text().replace("lr: 0.001", "lr: 0.01"))
    assert main(["compare", "--table-only", "--out", str(out)]) == 0
    warning = capsys.readouterr().err
    assert "the cross-entropy runs were trained with different settings, which the table mixes: lr (0.001, 0.01)" \
        in warning and "nngk" not in warning

    # The paper's figures of the comparison: curves of every method, t-SNE and the four spaces of the NNGK run.
    assert main(["plot", str(out), "--what", "curves,tsne,spaces"]) == 0
    figures = sorted(p.name for p in (out / "plots").iterdir())
    assert figures == ["cross-entropy-s0-tsne.png", "curves-digits.png", "nngk-s0-feature-spaces.png",
                       "nngk-s0-tsne.png"]  # no feature spaces for cross-entropy: it has no kernel head
    assert all((out / "plots" / name).stat().st_size > 10_000 for name in figures)


def test_tables_name_the_tasks_primary_metric(tmp_path):
    """A retrieval study's table shows Recall@1, in every format, not an accuracy it does not have."""
    from weakdml.evaluation.tables import MethodRow, SeedResult, write_tables

    rows = [MethodRow("ms", [SeedResult(0, 71.0, 80.0, 10.0), SeedResult(1, 73.0, 81.0, 11.0)])]
    markdown = write_tables(rows, tmp_path, "test_recall@1")
    assert "| Method | Test Recall@1 (%) |" in markdown
    assert "Test Recall@1 of the model chosen on validation" in markdown
    assert (tmp_path / "table.csv").read_text().splitlines()[0].startswith("method,n_seeds,test_recall@1_mean")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["metric"] == "test_recall@1" and summary["methods"]["ms"]["test_recall@1"]["mean"] == 72.0
    assert "Test Recall@1 (\\%)" in (tmp_path / "table.tex").read_text()
