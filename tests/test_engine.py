"""The engine's spine: schedules as pure functions of the step, parameter groups, the monitor that best.pt follows,
tasks (classification, retrieval on unseen classes, clustering without labels), class-held-out splits, evaluation
every N epochs, and image-source views."""

import math

import pytest
import torch
import torch.nn.functional as F
from tiny import metric_rows
from torch import nn

from weakdml.config import build_config
from weakdml.data.prepare import prepare_data
from weakdml.data.sources import ImageSet, SourceView, view
from weakdml.data.splits import make_split
from weakdml.engine import run as run_module
from weakdml.engine.checkpoint import load_checkpoint, save_atomic
from weakdml.engine.monitor import Monitor
from weakdml.engine.optim import ParamGroup
from weakdml.engine.schedule import lr_factor
from weakdml.engine.trainer import Trainer
from weakdml.errors import UserError
from weakdml.evaluation.retrieval import retrieval_metrics
from weakdml.methods import METHODS, Batch, Method
from weakdml.methods.nngk import NNGK

QUICK = {"progress": "off", "snapshot_images": 0}


# -- schedules -------------------------------------------------------------------------------------------------------
def test_schedules_are_pure_functions_of_the_position():
    cosine = build_config().optim
    assert [lr_factor(e, s, 3, 4, cosine) for e in range(4) for s in range(3)] == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4) for _ in range(3)])  # held for the epoch
    per_step = build_config(overrides={"schedule_unit": "step", "warmup_epochs": 1}).optim
    values = [lr_factor(e, s, 4, 3, per_step) for e in range(3) for s in range(4)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear warm-up over the first epoch's steps
    progress = [(e + s / 4 - 1) / 2 for e in range(1, 3) for s in range(4)]
    assert values[4:] == pytest.approx([0.5 * (1 + math.cos(math.pi * p)) for p in progress])
    steps = build_config(overrides={"schedule": "step", "milestones": "1,3", "gamma": 0.5}).optim
    assert [lr_factor(e, 0, 1, 4, steps) for e in range(4)] == [1.0, 0.5, 0.5, 0.25]


class TwoGroups(NNGK):
    """NNGK whose embedding projection learns at 10x the backbone's rate, without weight decay."""

    def parameter_groups(self) -> list[ParamGroup]:
        projection = list(self.model.projection.parameters())
        rest = [p for p in self.parameters() if all(p is not q for q in projection)]
        return [ParamGroup("backbone", rest), ParamGroup("embedding", projection, lr_factor=10.0, weight_decay=0.0)]


def test_parameter_groups_get_their_factor_at_every_step_and_after_resume(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "two-groups", TwoGroups)
    seen = []
    original = Trainer._check_finite

    def record(self, first_bad, epoch):
        seen.append({g["name"]: (g["lr"], g["weight_decay"]) for g in self.optimizer.param_groups})
        original(self, first_bad, epoch)

    monkeypatch.setattr(Trainer, "_check_finite", record)
    run = tmp_path / "run"
    run_module.train(build_config(overrides={"method": "two-groups", "epochs": 2, "lr": 0.01, "weight_decay": 1e-4,
                                             "out": str(run), **QUICK}))
    run_module.resume(run, {"epochs": 3})
    factors = [0.5 * (1 + math.cos(math.pi * e / 2)) for e in range(2)] + [0.5 * (1 + math.cos(math.pi * 2 / 3))]
    assert len(seen) == 3  # one logging interval per epoch of these few steps
    for groups, factor in zip(seen, factors):
        assert groups["backbone"] == pytest.approx((0.01 * factor, 1e-4))
        assert groups["embedding"] == pytest.approx((0.1 * factor, 0.0))


# -- monitor ---------------------------------------------------------------------------------------------------------
def test_monitor_modes_and_refusals():
    assert Monitor.parse("train_loss") == Monitor("train_loss", "min")
    assert Monitor.parse("val_recall@1") == Monitor("val_recall@1", "max")
    assert Monitor.parse("val_loss:max").mode == "max"
    for bad, message in (("test_accuracy", "never choose"), ("val_accuracy:up", "optionally :min or :max")):
        with pytest.raises(UserError, match=message):
            Monitor.parse(bad)
    lower = Monitor("train_loss", "min")
    assert lower.improves(0.5, 0.6) and lower.improves(0.5, 0.5) and not lower.improves(0.7, 0.6)
    assert Monitor("val_accuracy").improves(math.nan, 0.9)  # no validation: the later epoch


def test_best_follows_the_monitor_and_is_chosen_among_evaluated_epochs(tmp_path):
    run = tmp_path / "run"
    summary = run_module.train(build_config(overrides={"epochs": 5, "eval_every": 2, "monitor": "train_loss",
                                                       "out": str(run), **QUICK}))
    rows = metric_rows(run)
    assert ["val_accuracy" in row for row in rows] == [False, True, False, True, True]  # every 2nd, and the last
    losses = [row["train_loss"] for row in rows]
    assert summary.metrics["best_epoch"] == max(i for i, v in enumerate(losses) if v == min(losses))
    assert load_checkpoint(run / "best.pt")["monitor"] == "train_loss"
    assert summary.metrics["primary_metric"] == "test_accuracy" and summary.metrics["task"] == "classification"


def test_a_one_stage_run_of_the_earlier_checkpoint_format_resumes(tmp_path):
    run = tmp_path / "run"
    run_module.train(build_config(overrides={"epochs": 1, "out": str(run), **QUICK}))
    state = load_checkpoint(run / "last.pt")
    old = {k: v for k, v in state.items() if k not in ("best", "monitor")}
    save_atomic(old | {"best_val_accuracy": state["best"], "stage_best_val_accuracy": state["best"],
                       "scheduler": {}}, run / "last.pt")
    summary = run_module.resume(run, {"epochs": 2})
    assert [row["epoch"] for row in metric_rows(run)] == [0, 1] and summary.metrics["best_epoch"] in (0, 1)


# -- splits and tasks ------------------------------------------------------------------------------------------------
def test_validation_classes_are_held_out_whole():
    labels = torch.arange(60) % 6
    split = make_split("x", labels, seed=3, labeled_fraction=0.5, val_classes=2)
    val_classes = set(labels[split.val].tolist())
    assert len(val_classes) == 2 and len(split.val) == 20  # every image of the two classes
    trained = set(labels[split.labeled + split.unlabeled].tolist())
    assert not trained & val_classes and trained | val_classes == set(range(6))
    assert make_split("x", labels, seed=3, labeled_fraction=0).labeled == []
    with pytest.raises(UserError, match="at least one of the 6 classes"):
        make_split("x", labels, seed=0, val_classes=6)


def test_class_disjoint_digits_is_a_retrieval_task_selected_on_held_out_classes(tmp_path):
    """``--class-disjoint`` trains on classes 0-4 and tests on 5-9 leave-one-out; validation is Recall@1 among two
    held-out training classes; best.pt follows it, and the final metrics equal a direct computation on the saved
    model."""
    cfg = build_config(overrides={"class_disjoint": True, "val_classes": 2, "labeled_fraction": 0.5, "epochs": 3,
                                  "method": "contrastive", "batch_size": 32, "out": str(tmp_path / "run"), **QUICK})
    data = prepare_data(cfg)
    assert data.task == "retrieval" and data.bundle.classes == list("01234")
    assert data.bundle.test_classes == list("56789") and set(data.test.labels.tolist()) == set(range(5))
    assert len(set(data.val.labels.tolist())) == 2 and not set(data.val.labels.tolist()) & set(
        data.train.labeled.labels.tolist())
    summary = run_module.train(cfg)
    m = summary.metrics
    assert m["task"] == "retrieval" and m["primary_metric"] == "test_recall@1"
    assert {"test_recall@1", "test_recall@8", "test_map@r", "test_nmi", "val_recall@1"} <= set(m)
    rows = metric_rows(tmp_path / "run")
    assert "val_recall@1" in rows[0] and "val_accuracy" not in rows[0]
    assert rows[m["best_epoch"]]["val_recall@1"] == max(row["val_recall@1"] for row in rows)
    _, data, method, _ = run_module.load_run(tmp_path / "run", "cpu")
    direct = retrieval_metrics(method.embed_all(data.test), data.test.labels)
    assert m["test_recall@1"] == pytest.approx(direct["recall@1"]) and m["test_map@r"] == pytest.approx(direct["map@r"])
    assert m["val_recall@1"] == pytest.approx(retrieval_metrics(method.embed_all(data.val), data.val.labels)[
        "recall@1"])
    with pytest.raises(UserError, match="at least 2"):
        prepare_data(build_config(overrides={"class_disjoint": True, "val_classes": 1}))


def test_train_classes_choose_the_training_side():
    cfg = build_config(overrides={"train_classes": "0,2,4,6,8"})
    data = prepare_data(cfg)
    assert data.bundle.classes == list("02468") and data.bundle.test_classes == list("13579")
    with pytest.raises(UserError, match="at least 2 classes to train on and 1 to test on"):
        prepare_data(build_config(overrides={"train_classes": "0-9"}))


class TwoViewClusters(Method):
    """A label-free clustering method (IIC: mutual information of the cluster assignments of two views), only to
    test the clustering task: it trains on the unlabelled part and never sees a label."""

    needs_labels = False
    task = "clustering"

    def __init__(self, model, data, cfg) -> None:
        super().__init__(model, data, cfg)
        self.clusters = nn.Linear(model.dim, 10)

    def batches(self, epoch: int):
        for batch in self.shuffled_batches(len(self.data.unlabeled), self.cfg.train.batch_size):
            yield Batch(torch.zeros(0, dtype=torch.long), batch.index)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch.unlabeled_images
        p = self.clusters(self.model(self.view(x))).softmax(1)
        q = self.clusters(self.model(self.view(x))).softmax(1)
        joint = (p.T @ q / len(x) + q.T @ p / len(x)) / 2
        marginal = joint.sum(1)
        loss = -(joint * (joint.clamp_min(1e-9).log() - marginal[:, None].log() - marginal[None, :].log())).sum()
        return {"loss": loss}

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.clusters(embeddings), 1)


def test_a_label_free_method_clusters_with_no_label_and_is_scored_only_on_test(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "two-view-clusters", TwoViewClusters)
    with pytest.raises(UserError, match="no labelled training image"):
        run_module.train(build_config(overrides={"labeled_fraction": 0, "out": str(tmp_path / "nngk"), **QUICK}))
    summary = run_module.train(build_config(overrides={
        "method": "two-view-clusters", "labeled_fraction": 0, "epochs": 6, "batch_size": 128, "lr": 3e-3,
        "l2_normalize": False, "out": str(tmp_path / "run"), **QUICK}))
    m = summary.metrics
    assert m["task"] == "clustering" and m["primary_metric"] == "test_cluster_accuracy"
    rows = metric_rows(tmp_path / "run")
    assert "val_accuracy" not in rows[-1] and 0 <= rows[-1]["test_cluster_accuracy"] <= 1  # scored every epoch
    # it learns: measured 0.11 -> 0.29 accuracy and NMI 0.01 -> 0.22 over the 6 epochs (2 threads)
    assert m["test_cluster_accuracy"] >= rows[0]["test_cluster_accuracy"] + 0.1, rows
    assert m["test_nmi"] >= rows[0]["test_nmi"] + 0.1, rows


def test_a_folder_with_test_classes_of_its_own_is_a_retrieval_set(tmp_path):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for part, classes in (("train", "ab"), ("test", "cd")):
        for c in classes:
            (tmp_path / part / c).mkdir(parents=True)
            for i in range(4):
                pixels = torch.randint(0, 256, (8, 8), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(tmp_path / part / c / f"{i}.png")
    with pytest.raises(UserError, match="add --class-disjoint"):
        prepare_data(build_config(overrides={"dataset": "folder", "data_root": str(tmp_path)}))
    data = prepare_data(build_config(overrides={"dataset": "folder", "data_root": str(tmp_path),
                                                "class_disjoint": True, "labeled_fraction": 1.0}))
    assert data.task == "retrieval" and data.bundle.test_classes == ["c", "d"] and len(data.test) == 8


# -- sources and loading ---------------------------------------------------------------------------------------------
def test_a_folder_trains_alike_from_memory_from_its_cache_and_from_its_files(tmp_path):
    """The three image sources of a folder give the same training, to the last bit; --workers loads through worker
    processes; a cache and decoding on load together are refused."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for part in ("train", "test"):
        for c in "ab":
            (tmp_path / part / c).mkdir(parents=True)
            for i in range(8):
                pixels = (torch.randint(0, 128, (8, 8), generator=g) + 100 * (c == "b")).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(tmp_path / part / c / f"{i}.png")
    base = {"dataset": "folder", "data_root": str(tmp_path), "labeled_fraction": 1.0, "epochs": 2, "batch_size": 4,
            **QUICK}
    ways = {"memory": {}, "cache": {"cache_dir": str(tmp_path / "cache")}, "files": {"decode_on_load": True,
                                                                                     "workers": 2}}
    results = {name: run_module.train(build_config(overrides=base | extra | {"out": str(tmp_path / name)}))
               for name, extra in ways.items()}
    assert any((tmp_path / "cache").glob("*.u8"))
    weights = {name: load_checkpoint(tmp_path / name / "last.pt")["method"] for name in ways}
    for name in ("cache", "files"):
        assert results[name].metrics["test_accuracy"] == results["memory"].metrics["test_accuracy"]
        assert all(torch.equal(weights[name][k], weights["memory"][k]) for k in weights["memory"])
    with pytest.raises(UserError, match="choose one"):
        prepare_data(build_config(overrides=base | ways["cache"] | {"decode_on_load": True}))


def test_source_views_load_like_indexing_without_copying():
    g = torch.Generator().manual_seed(0)
    a = ImageSet(torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8, generator=g), torch.arange(10))
    b = ImageSet(torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8, generator=g), torch.arange(5) + 10)
    joined = SourceView([(a, torch.tensor([7, 1, 3])), (b, torch.tensor([4, 0]))])
    expected = torch.cat([a.images[[7, 1, 3]], b.images[[4, 0]]])
    order = torch.tensor([4, 0, 2, 3, 1])
    assert torch.equal(joined.load(order), expected[order]) and joined.labels.tolist() == [7, 1, 3, 14, 10]
    relabelled = view(a, [2, 5], labels=torch.tensor([-1, -1]))
    assert relabelled.labels.tolist() == [-1, -1] and torch.equal(relabelled.load(torch.tensor([1])), a.images[[5]])


def test_every_rank_takes_a_contiguous_share_of_the_global_batch(monkeypatch):
    """Batches are drawn from (seed, epoch) alone; with N processes each takes its slice, and together they are the
    global batch, whatever N."""
    from weakdml.engine import dist

    batch = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    for world in (1, 2, 3):
        monkeypatch.setattr(dist, "world_size", lambda world=world: world)
        shares = []
        for rank in range(world):
            monkeypatch.setattr(dist, "rank", lambda rank=rank: rank)
            shares.append(dist.shard(batch))
        assert torch.equal(torch.cat(shares), batch) and max(map(len, shares)) - min(map(len, shares)) <= 1
