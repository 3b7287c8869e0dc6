"""SPICE end to end on tiny data: every stage (pretrain, self, reliable, semi) in its directory with its outputs and
ACC/NMI/ARI where ground truth exists; garbage ground truth changes no stage's output (only scores read it); an
interrupted run resumes to the uninterrupted result, stage by stage through the stage commands, which refuse to run
before the stage they need; relaxation of the reliable thresholds is reported; ``weakdml cluster FOLDER`` on PNGs
written here, with its bad inputs."""

import csv
import json
import logging
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from tiny import TINY_SPICE, Interrupt, metric_rows

from weakdml import cli
from weakdml.config import build_config
from weakdml.data import prepare
from weakdml.engine import cluster as cluster_module
from weakdml.engine import run as run_module
from weakdml.engine.checkpoint import load_checkpoint
from weakdml.engine.pipeline import pipeline_for
from weakdml.engine.trainer import Trainer
from weakdml.errors import UserError
from weakdml.methods.spice_self import SpiceSelf, big_batch, default_big_batch


def tiny_config(out, **overrides):
    return build_config(overrides={**TINY_SPICE, "out": str(out), **overrides})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run of this file on one torch thread: the tiny runs' few reliable samples (one cluster's size sets every
    cluster's) depend on float summation order, the thresholds below were measured on one thread, and the
    comparisons of two runs need both computed alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def spice_run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("spice") / "run"
    return cluster_module.cluster(tiny_config(out)).run_dir


def _weights(run_dir, stage):
    return load_checkpoint(next(run_dir.glob(f"[0-9][0-9]-{stage}")) / "best.pt")["method"]


def test_every_stage_writes_its_outputs_and_scores_where_ground_truth_exists(spice_run):
    assert [p.name for p in sorted(spice_run.glob("[0-9][0-9]-*"))] == ["00-pretrain", "01-self", "02-reliable",
                                                                       "03-semi"]
    assert all((d / "stage.json").is_file() for d in spice_run.glob("[0-9][0-9]-*"))
    pretrain, heads, semi = (_weights(spice_run, s) for s in ("pretrain", "self", "semi"))
    for key, value in heads.items():  # SPICE-Self's backbone is MoCo's, frozen
        if key.startswith("model."):
            assert torch.equal(value, pretrain[key]), key
    assert not torch.equal(semi["model.backbone.features.0.weight"], pretrain["model.backbone.features.0.weight"])
    rows = metric_rows(spice_run)
    assert [r["stage"] for r in rows] == [0] + [1] * 8 + [2]
    for row in rows[1:]:  # the self and semi stages are scored on the test images at every epoch
        assert {"test_cluster_accuracy", "test_nmi", "test_ari"} <= set(row)
    # learning, not chance (0.1): measured ACC 0.39 / NMI 0.36 after SPICE-Self's 48 steps (1 thread; 6 epochs left a
    # cluster empty once MoCo's colour-jitter draws changed)
    assert rows[8]["test_cluster_accuracy"] > 0.25 and rows[8]["test_nmi"] > 0.2, rows[8]
    report = json.loads((spice_run / "02-reliable" / "reliable.json").read_text())
    reliable = load_checkpoint(spice_run / "02-reliable" / "reliable.pt")
    kept = [c["kept"] for c in report["clusters"]]
    assert len(set(kept)) == 1 and len(reliable["indices"]) == sum(kept) == report["reliable"]  # balanced
    assert report["head_losses"][report["head"]] == min(report["head_losses"])  # chosen by its own loss
    assert report["evaluation"]["reliable_precision"] > 0.3, report["evaluation"]  # measured 0.4; chance 0.1
    metrics = json.loads((spice_run / "cluster_metrics.json").read_text())
    assert metrics["images"] == 1437 and sum(metrics["cluster_sizes"]) == 1437
    assert {"cluster_accuracy", "nmi", "ari"} <= set(metrics)
    predictions = list(csv.reader((spice_run / "predictions.csv").open()))
    assert predictions[0] == ["file", "cluster", "confidence"] and predictions[1][0] == "train/0"
    assert len(predictions) == 1438 and (spice_run / "clusters.png").is_file()


def test_garbage_ground_truth_changes_no_stage_output(spice_run, tmp_path, monkeypatch):
    real = prepare.load_dataset

    def poisoned(cfg):
        bundle = real(cfg)
        g = torch.Generator().manual_seed(123)
        bundle.train.labels = torch.randint(0, 10, (len(bundle.train),), generator=g)
        return bundle

    monkeypatch.setattr(prepare, "load_dataset", poisoned)
    other = cluster_module.cluster(tiny_config(tmp_path / "run")).run_dir
    for stage in ("pretrain", "self", "semi"):
        theirs, ours = _weights(spice_run, stage), _weights(other, stage)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), stage
    for key in ("indices", "labels"):
        assert torch.equal(*(load_checkpoint(d / "02-reliable" / "reliable.pt")[key] for d in (spice_run, other)))
    assert (spice_run / "predictions.csv").read_text() == (other / "predictions.csv").read_text()
    scores = [json.loads((d / "02-reliable" / "reliable.json").read_text())["evaluation"] for d in (spice_run, other)]
    assert scores[0] != scores[1]  # the scores did read the (other) ground truth


def test_an_interrupted_run_resumes_stage_by_stage_to_the_same_result(spice_run, tmp_path, monkeypatch):
    original = Trainer._train_epoch

    def stop_in_self(self, epoch, quiet):
        if epoch == 3:  # the third of SPICE-Self's epochs
            raise Interrupt
        return original(self, epoch, quiet)

    monkeypatch.setattr(Trainer, "_train_epoch", stop_in_self)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        cluster_module.cluster(tiny_config(run_dir, spice_until="self"))
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    with pytest.raises(UserError, match="the reliable stage needs the self stage.*weakdml cluster-self"):
        cluster_module.run_stage(run_dir, "reliable", {})
    assert cluster_module.run_stage(run_dir, "self", {}).metrics["stage"] == "self"
    assert (run_dir / "predictions.csv").is_file()  # the heads' clusters, before any later stage
    with pytest.raises(UserError, match="the semi stage needs the reliable stage.*weakdml reliable"):
        cluster_module.run_stage(run_dir, "semi", {})
    cluster_module.run_stage(run_dir, "reliable", {})
    cluster_module.run_stage(run_dir, "semi", {})
    for stage in ("self", "semi"):
        theirs, ours = _weights(spice_run, stage), _weights(run_dir, stage)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), stage
    assert (spice_run / "predictions.csv").read_text() == (run_dir / "predictions.csv").read_text()


def _reliable_again(source, out, **settings):
    """A new run with ``source``'s pretraining and SPICE-Self stages and the reliable stage again, with other
    settings (`weakdml reliable SOURCE --out OUT --spice-...`)."""
    return cluster_module.run_stage(source, "reliable", {"out": str(out), **settings}).run_dir


def test_a_stage_again_with_other_settings_is_a_new_run_that_keeps_the_earlier_stages(spice_run, tmp_path):
    before = (spice_run / "config.yaml").read_text()
    with pytest.raises(UserError, match=r"to run the reliable stage with other --spice-ratio, give --out NEW_DIR: a "
                                        r"new run that keeps .*'s finished stages before reliable"):
        cluster_module.run_stage(spice_run, "reliable", {"spice_ratio": 0.5})
    with pytest.raises(UserError, match="spice_self_epochs cannot change"):  # SPICE-Self is kept, so are its settings
        _reliable_again(spice_run, tmp_path / "self", spice_self_epochs=3)
    run_dir = _reliable_again(spice_run, tmp_path / "run", spice_ratio=0.5, spice_balance=False)
    assert build_config(run_dir / "config.yaml").spice.spice_ratio == 0.5
    assert (spice_run / "config.yaml").read_text() == before
    for stage in ("pretrain", "self"):
        ours, theirs = _weights(run_dir, stage), _weights(spice_run, stage)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), stage
    ours = json.loads((run_dir / "02-reliable" / "reliable.json").read_text())["reliable"]
    theirs = json.loads((spice_run / "02-reliable" / "reliable.json").read_text())["reliable"]
    assert ours > theirs  # a looser neighbour ratio (0.5 against 0.8), no balancing: more images


def test_the_labels_given_once_name_the_clusters_of_later_stages_and_of_runs_continued_with_out(spice_run, tmp_path):
    few = tmp_path / "few.csv"
    few.write_text("file,label\n" + "".join(f"train/{i},name{i % 3}\n" for i in range(12)))
    first = cluster_module.run_stage(spice_run, "reliable", {"out": str(tmp_path / "first"), "spice_ratio": 0.5},
                                     few).run_dir
    few.unlink()  # the run holds its own copy
    assert (first / "labels.csv").read_text().startswith("file,label\ntrain/0,name0\n")
    named = cluster_module.run_stage(first, "semi", {})  # no --labels: the run's copy names the clusters
    assert set(named.metrics["cluster_names"].values()) <= {"name0", "name1", "name2"}
    assert next(csv.reader((first / "predictions.csv").open())) == ["file", "cluster", "confidence", "label"]
    second = _reliable_again(first, tmp_path / "second", spice_ratio=0.6)  # a run continued from it with --out
    assert (second / "labels.csv").read_text() == (first / "labels.csv").read_text()
    assert "cluster_names" in json.loads((second / "cluster_metrics.json").read_text())
    assert not (spice_run / "labels.csv").exists()  # the run branched from is left as it was


def test_embed_a_stage_of_a_clustering_run(spice_run, tmp_path):
    from weakdml.engine.embed import embed_run

    out, n = embed_run(spice_run, stage="pretrain")
    assert out == spice_run / "00-pretrain" and n == 1437 + 360  # by default beside the stage's weights
    moco = np.load(out / "embeddings.npy")
    heads = np.load(embed_run(spice_run, tmp_path / "self", stage="self")[0] / "embeddings.npy")
    semi = np.load(embed_run(spice_run, tmp_path / "semi")[0] / "embeddings.npy")  # the run's model: SPICE-Semi's
    assert moco.shape == semi.shape and np.allclose(moco, heads, atol=1e-6)  # SPICE-Self keeps MoCo's backbone frozen
    assert not np.allclose(moco, semi, atol=1e-3)
    assert (out / "ids.txt").read_text().splitlines()[:2] == ["train/0", "train/1"]
    with pytest.raises(UserError, match="the reliable stage of .* trains no network: give one of pretrain, self, "
                                        "semi"):
        embed_run(spice_run, tmp_path / "x", stage="reliable")
    with pytest.raises(UserError, match="the moco stage of .* is not one of its stages"):
        embed_run(spice_run, tmp_path / "x", stage="moco")


def test_strict_thresholds_relax_per_cluster_with_a_report_or_fail_naming_the_cluster(spice_run, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="weakdml")
    run_dir = _reliable_again(spice_run, tmp_path / "run", spice_ratio=1.0, spice_score=0.999)
    report = json.loads((run_dir / "02-reliable" / "reliable.json").read_text())
    relaxed = [c for c in report["clusters"] if c["relaxations"]]
    assert relaxed and all(c["score_threshold"] < 0.999 for c in relaxed)
    for c in relaxed:
        assert f"cluster {c['cluster']} had none at the thresholds asked for; relaxed in {c['relaxations']}" in \
            caplog.text
    with pytest.raises(UserError, match=r"cluster \d+ has no reliable sample at neighbour ratio 1.00 .*"
                                        r"--spice-min-ratio.*`weakdml reliable .*strict --spice-min-score X "
                                        r"--out NEW_DIR` tries other thresholds on this run's SPICE-Self"):
        _reliable_again(spice_run, tmp_path / "strict", spice_ratio=1.0, spice_score=0.999, spice_relax_steps=0)


def _png_folder(folder, n):
    digits = load_digits()
    folder.mkdir()
    for i in range(n):
        Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).save(folder / f"img{i:03d}.png")
    return digits.target[:n]


FOLDER_FLAGS = ["--num-clusters", "3", "--epochs", "2", "--batch-size", "64", "--moco-queue", "128",
                "--spice-self-epochs", "10", "--spice-self-batch", "100", "--no-double-softmax", "--spice-knn", "10",
                "--spice-score", "0.2", "--spice-ratio", "0.5", "--spice-min-ratio", "0.1", "--spice-min-score", "0.1",
                "--spice-semi-epochs", "1", "--spice-semi-batch", "16", "--fixmatch-ratio", "2", "--spice-ema", "0.5",
                "--progress", "off"]


def test_cluster_a_folder_of_pngs_names_the_clusters_from_a_few_labels(tmp_path, capsys):
    targets = _png_folder(tmp_path / "images", 120)
    few = tmp_path / "few.csv"
    few.write_text("file,label\n" + "".join(f"img{i:03d}.png,digit{targets[i]}\n" for i in range(12)))
    out = tmp_path / "run"
    assert cli.main(["cluster", str(tmp_path / "images"), *FOLDER_FLAGS, "--labels", str(few), "--out",
                     str(out)]) == 0
    rows = list(csv.reader((out / "predictions.csv").open()))
    assert rows[0] == ["file", "cluster", "confidence", "label"] and len(rows) == 121
    assert sorted(r[0] for r in rows[1:]) == [f"img{i:03d}.png" for i in range(120)]
    metrics = json.loads((out / "cluster_metrics.json").read_text())
    assert "cluster_accuracy" not in metrics  # a folder has no ground truth
    names = {int(c): name for c, name in metrics["cluster_names"].items()}
    by_file = {r[0]: r for r in rows[1:]}
    labelled = [by_file[f"img{i:03d}.png"] for i in range(12)]
    assert set(names) == {int(r[1]) for r in labelled}  # each cluster holding a labelled image gets a name
    assert len(set(names.values())) == len(names) and set(names.values()) <= {f"digit{t}" for t in targets[:12]}
    assert all(r[3] == names.get(int(r[1]), "") for r in rows[1:])
    agree = sum(r[3] == f"digit{t}" for r, t in zip(labelled, targets[:12])) / 12
    assert metrics["labels_agreement"] == pytest.approx(agree)
    assert Image.open(out / "clusters.png").size == (10 * 50, 3 * 50)
    shown = capsys.readouterr()
    assert f"run directory: {out}" in shown.out
    # epochs are numbered across the stages; a later stage also shows its own count
    assert re.search(r"^epoch 1/2  loss", shown.err, re.MULTILINE)
    assert re.search(r"^epoch 3/12 \(this stage: 1/10\)  loss", shown.err, re.MULTILINE)
    assert "test_cluster_accuracy not measured (no labelled test images, or nothing to score them with)" in shown.err
    assert "accuracy nan" not in shown.err


@pytest.mark.parametrize("case, message", [
    ("empty", "holds no images"),
    ("corrupt", "cannot read image .*bad.png"),
    ("few", "2 images cannot form 3 clusters"),
    ("labels", "row 1: nothere.png is not among the images clustered"),
    ("label-missing", "row 2: give a file and a label"),
    ("no-clusters", "give the number of clusters: --num-clusters"),
])
def test_bad_cluster_input_is_one_line(tmp_path, capsys, case, message):
    folder = tmp_path / "images"
    _png_folder(folder, 2 if case == "few" else 0 if case == "empty" else 20)
    args = ["cluster", str(folder), *FOLDER_FLAGS, "--out", str(tmp_path / "run")]
    if case == "corrupt":
        (folder / "bad.png").write_bytes(b"not a png")
    if case == "labels":
        (tmp_path / "few.csv").write_text("nothere.png,a\n")
        args += ["--labels", str(tmp_path / "few.csv")]
    if case == "label-missing":
        (tmp_path / "few.csv").write_text("file,label\nimg000.png,a\nimg001.png,\n")
        args += ["--labels", str(tmp_path / "few.csv")]
    if case == "no-clusters":
        args.remove("--num-clusters")
        args.remove("3")
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("weakdml: error: "), err  # refused before any stage trained
    assert re.search(message, err[0]), err
    assert not (tmp_path / "run" / "00-pretrain").exists()


def test_spice_refuses_labelled_images_and_a_stage_it_does_not_have(tmp_path):
    with pytest.raises(UserError, match="spice clusters without labels: give --labeled-fraction 0"):
        run_module.train(tiny_config(tmp_path / "labelled", labeled_fraction=0.1))
    assert not (tmp_path / "labelled").exists()  # refused before anything is written
    with pytest.raises(UserError, match="--pretrained gives the backbone, so there is no pretraining stage"):
        pipeline_for(tiny_config(tmp_path / "run", pretrained=str(tmp_path), spice_until="pretrain"))


def test_test_as_unlabeled_clusters_the_test_images_too_with_their_labels_hidden_from_the_stages():
    from weakdml.pipelines.spice import ground_truth, image_ids

    plain, both = (prepare.prepare_data(build_config(overrides={**TINY_SPICE, "test_as_unlabeled": flag}),
                                        needs_labels=False) for flag in (False, True))
    assert (len(plain.train.unlabeled), len(both.train.unlabeled)) == (1437, 1437 + 360)
    assert bool((both.train.unlabeled.labels == -1).all())  # what the stages see
    index = torch.arange(1437, 1437 + 360)
    assert torch.equal(both.train.unlabeled.load(index), both.test.load(torch.arange(360)))
    _, y = load_digits(return_X_y=True)
    truth = ground_truth(both)  # scoring only: the train part's true classes, then the test images'
    assert torch.equal(truth[:1437], ground_truth(plain)) and torch.equal(truth[1437:], both.test.labels)
    assert sorted(truth.tolist()) == sorted(y.tolist())  # every digit exactly once
    ids = image_ids(both)
    assert ids[:1437] == image_ids(plain) and ids[1437:] == [f"test/{i}" for i in range(360)]


def test_spice_self_big_batch_defaults_to_a_tenth_of_the_images_and_warns_when_a_given_one_gives_fewer_steps(
        tmp_path, caplog):
    def warnings_with(batch_size):
        cfg = tiny_config(tmp_path / "r", spice_self_batch=batch_size)
        data = prepare.prepare_data(cfg, needs_labels=False)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="weakdml"):
            SpiceSelf.check_data(cfg, data.train)
        return cfg, data, [r.getMessage() for r in caplog.records if "SPICE-Self" in r.getMessage()]

    cfg, data, messages = warnings_with(None)
    images = len(data.train.unlabeled)
    assert messages == [] and big_batch(cfg, data.train) == 500 == 50 * 10  # 1,437 digits: 50 a cluster, not 143
    cfg, data, messages = warnings_with(1000)
    assert big_batch(cfg, data.train) == 1000
    assert messages == [(f"SPICE-Self: {images:,} images in big batches of 1,000 give the heads 2 step(s) an epoch, "
                        f"one pseudo-labelling each; a 10,000-image folder clustered at 0.55 ACC with 2 an epoch and "
                        f"0.70 with 10: consider --spice-self-batch 500 (the default here)")]
    assert warnings_with(300)[2] == []  # more steps than the default gives
    def of(images):
        return default_big_batch(cfg, SimpleNamespace(unlabeled=range(images), num_classes=10))

    assert (of(70_000), of(12_000)) == (5000, 1200)
