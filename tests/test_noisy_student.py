"""Noisy Student (MbDML4): pseudo-labels come from the teacher's predictions only, an empty confident set is handled,
and rounds hand the teacher's best weights to a re-initialised student."""

import json
import logging

import pytest
import torch
import torch.nn.functional as F
from test_nngk import kernel_scores_reference, loop_class_log_scores
from tiny import Interrupt, metric_rows, tiny_method

from weakdml.config import build_config
from weakdml.data.prepare import prepare_data
from weakdml.data.types import ImageSet, TrainData
from weakdml.engine import run as run_module
from weakdml.engine.checkpoint import load_checkpoint
from weakdml.errors import UserError
from weakdml.methods import Batch
from weakdml.methods.noisy_student import MbDML4, select_pseudo_labels, soft_cross_entropy
from weakdml.models.backbones import DropPath


def test_select_pseudo_labels_threshold_and_balance():
    probs = torch.tensor([[0.95, 0.05], [0.97, 0.03], [0.99, 0.01], [0.2, 0.8], [0.05, 0.95], [0.6, 0.4]])
    assert select_pseudo_labels(probs, 0.9, balance=False).tolist() == [True, True, True, False, True, False]
    # 4 reach the threshold: balanced, each predicted class gets its 2 most confident, whatever their confidence
    assert select_pseudo_labels(probs, 0.9, balance=True).tolist() == [False, True, True, True, True, False]
    assert not select_pseudo_labels(probs, 1.5, balance=True).any()
    # exactly n: 2 reach 0.96, one per class; 5 reach 0.8, two per class and the most confident of the rest
    assert select_pseudo_labels(probs, 0.96, balance=True).tolist() == [False, False, True, False, True, False]
    assert select_pseudo_labels(probs, 0.8, balance=True).tolist() == [True, True, True, True, True, False]
    # all 6 reach 0.5: class 1, predicted twice, keeps both and class 0's fourth image fills class 1's empty place;
    # 1 over 3 classes: the most confident image
    assert select_pseudo_labels(probs, 0.5, balance=True).all()
    three = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.85, 0.05], [0.3, 0.3, 0.4]])
    assert select_pseudo_labels(three, 0.8, balance=True).tolist() == [False, True, False]


def test_soft_cross_entropy_equals_cross_entropy_on_one_hot():
    scores = torch.randn(5, 3)
    labels = torch.tensor([0, 2, 1, 1, 0])
    torch.testing.assert_close(soft_cross_entropy(scores, torch.eye(3)[labels]),
                               torch.nn.functional.cross_entropy(scores, labels))


def tiny_mbdml4(**overrides):
    """MbDML4 on 12 labelled and 30 unlabelled random images, its bank built and its kernel weights random."""
    m, g = tiny_method("mbdml4", 12, 3, n_unlabeled=30, **{"neighbours": 5, "sigma": 0.7, **overrides})
    m.on_epoch_start(0)
    m.head.log_weights.data.normal_(0, 0.3, generator=g)
    return m


@pytest.mark.parametrize("soft,balance", [(False, True), (True, False)])
def test_student_pseudo_labels_and_loss_equal_reference(soft, balance):
    """The student's targets are the teacher's kernel predictions (one-hot or its probabilities) on the images the
    selection rule keeps; its loss is the MbDML3 loss plus scale_nst x the cross-entropy of its kernel scores on a
    batch of unlabelled_ratio x as many of those images."""
    m = tiny_mbdml4(nst_soft=soft, nst_balance=balance, nst_threshold=0.5, nst_init="teacher", nst_augment="none",
                    scale_nst=1.5, unlabeled_ratio=2, batch_size=4, beta=0.5, scale_mixup=3.0)
    teacher = kernel_scores_reference(m.head, m.embed_all(m.data.unlabeled.images)).softmax(1).float()
    m.begin_stage(1)
    assert torch.equal(m.pseudo_mask, select_pseudo_labels(teacher, 0.5, balance))
    assert 0 < int(m.pseudo_mask.sum()) < 30
    expected = teacher if soft else F.one_hot(teacher.argmax(1), 3).float()
    torch.testing.assert_close(m.pseudo_targets, expected)

    m.seed_epoch(1)
    m.on_epoch_start(1)
    batch = next(iter(m.batches(1)))
    assert len(batch.unlabeled_index) == 8 and m.pseudo_mask[batch.unlabeled_index].all()
    assert torch.equal(batch.unlabeled_images, m.data.unlabeled.images[batch.unlabeled_index])
    losses = m.training_step(batch)
    scores = kernel_scores_reference(m.head, m.model(batch.unlabeled_images.float() / 255))
    reference = -(expected[batch.unlabeled_index] * F.log_softmax(scores, 1)).sum(1).mean()
    torch.testing.assert_close(losses["unlabeled"].double(), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["loss"], 0.5 * losses["nngk"] + 3.0 * losses["mixup"] + 1.5 * reference.float())


def test_online_pseudo_loss_equals_reference():
    """The original's online rule: an unlabelled image is kept when its max kernel probability (weak view) exceeds
    c_tau x the mean max probability of the clean labelled batch; its loss is the cross-entropy of the strong view
    against that prediction. Nothing kept: exactly zero."""
    m = tiny_mbdml4(nst_variant="online", nst_start=0)
    kinds = []

    def plain_view(images, kind=None):  # records the views asked for; no random draws to reproduce
        kinds.append(kind)
        return images.float() / 255

    m.view = plain_view
    idx = torch.tensor([0, 4, 5, 7])
    unlabeled = m.data.unlabeled.images[:10]
    batch = Batch(m.data.labeled.images[idx], m.data.labeled.labels[idx], idx, unlabeled, torch.arange(10))
    z = m.model(batch.images.float() / 255)
    labelled = loop_class_log_scores(z, m.head.centres, m.head.centre_labels, m.head.log_weights,
                                     m.head.train_neighbours[idx], m.head.sigma, 3).softmax(1).max(1).values.mean()
    confidence, predicted = kernel_scores_reference(m.head, m.model(unlabeled.float() / 255)).detach().softmax(1).max(1)
    ratios = (confidence / labelled.detach()).sort().values
    m.cfg.nst.c_tau = float(ratios[4] + ratios[5]) / 2  # keeps the five most confident
    kinds.clear()
    losses = m.training_step(batch)
    assert kinds[-3:] == ["none", "weak", "strong"]
    keep = confidence > m.cfg.nst.c_tau * labelled
    assert int(keep.sum()) == 5 and losses["pseudo_fraction"].item() == 0.5
    scores = kernel_scores_reference(m.head, m.model(unlabeled[keep].float() / 255))
    torch.testing.assert_close(losses["unlabeled"].double(), F.cross_entropy(scores, predicted[keep]),
                               rtol=1e-5, atol=1e-6)
    m.cfg.nst.c_tau = float(ratios[-1]) * 1.01
    losses = m.training_step(batch)
    assert losses["unlabeled"].item() == 0 and losses["pseudo_fraction"].item() == 0

    # in training mode the labelling passes leave BatchNorm alone: only the clean, mixed and strong passes count
    m.train()
    m.cfg.nst.c_tau = 0.0
    norm = next(layer for layer in m.model.modules() if isinstance(layer, torch.nn.BatchNorm2d))
    before = int(norm.num_batches_tracked)
    m.training_step(batch)
    assert int(norm.num_batches_tracked) == before + 3 and m.model.training


def test_online_variant_never_reads_unlabelled_labels():
    """The online variant labels unlabelled batches itself at every step: their true labels or garbage change
    nothing."""
    losses = []
    for labels in (torch.arange(30) % 3, torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(9))):
        m, _ = tiny_method("mbdml4", 12, 3, n_unlabeled=30, unlabeled_labels=labels, neighbours=5,
                           nst_variant="online", nst_start=0, c_tau=0.5, batch_size=4, augment="weak")
        m.seed_epoch(0)
        m.on_epoch_start(0)
        losses.append([m.training_step(batch) for batch in m.batches(0)])
    assert any(step["pseudo_fraction"] > 0 for step in losses[0])
    for a, b in zip(*losses):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def student_after_one_round(unlabeled_labels: torch.Tensor, threshold: float = 0.3):
    """A trained-for-2-epochs teacher, then begin_stage(1) and one student step; returns what depends on data: the
    method, the step's losses and the teacher's probabilities on the unlabelled images."""
    torch.manual_seed(0)
    cfg = build_config(overrides={"method": "mbdml4", "epochs": 2, "nst_threshold": threshold, "seed": 0})
    data = prepare_data(cfg)
    unlabeled = ImageSet(data.train.unlabeled.images, unlabeled_labels)
    train = TrainData(data.train.labeled, unlabeled, data.train.num_classes, data.train.flip)
    method = run_module.METHODS["mbdml4"](run_module.EmbeddingNet(cfg.model, 1, 16), train, cfg)
    opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    for epoch in range(2):
        method.train()
        method.seed_epoch(epoch)
        method.on_epoch_start(epoch)
        for batch in method.batches(epoch):
            opt.zero_grad()
            method.training_step(batch)["loss"].backward()
            opt.step()
    teacher_probs = method.predict_all(unlabeled.images).softmax(1)
    method.begin_stage(1)
    method.train()
    method.seed_epoch(2)
    method.on_epoch_start(2)
    batch = next(iter(method.batches(2)))
    return method, method.training_step(batch), teacher_probs


def test_unlabelled_labels_are_never_read():
    """Poisoned labels (the true ones, or garbage) on the unlabelled part change nothing."""
    cfg = build_config()
    data = prepare_data(cfg)
    assert (data.train.unlabeled.labels == -1).all()  # what training code gets
    pool = prepare_data(cfg).bundle.train.labels
    true_labels = pool[torch.tensor(data.split.unlabeled)]
    garbage = torch.randint(0, 10, true_labels.shape, generator=torch.Generator().manual_seed(9))
    a, losses_a, _ = student_after_one_round(true_labels)
    b, losses_b, _ = student_after_one_round(garbage)
    assert a.pseudo_mask.any()
    assert torch.equal(a.pseudo_mask, b.pseudo_mask) and torch.equal(a.pseudo_targets, b.pseudo_targets)
    assert torch.equal(losses_a["loss"], losses_b["loss"])


def test_pseudo_labels_are_the_teachers_predictions_and_empty_set_is_handled(caplog):
    method, losses, teacher_probs = student_after_one_round(torch.full((1295,), -1), threshold=0.3)
    confident = int((teacher_probs.max(1).values >= 0.3).sum())
    assert 0 < confident < 1295 and int(method.pseudo_mask.sum()) == confident  # balancing keeps how many
    assert torch.equal(method.pseudo_targets, F.one_hot(teacher_probs.argmax(1), 10).float())  # hard targets
    assert losses["unlabeled"] > 0 and losses["loss"] > losses["unlabeled"]
    with caplog.at_level(logging.WARNING, logger="weakdml"):
        empty, losses, _ = student_after_one_round(torch.full((1295,), -1), threshold=1.01)
    assert not empty.pseudo_mask.any()
    assert "no unlabelled image" in caplog.text
    assert torch.isfinite(losses["loss"]) and "unlabeled" not in losses  # labelled-only student step


def test_rounds_hand_over_teacher_to_student(tmp_path, monkeypatch):
    seen = {}
    original = MbDML4.begin_stage

    def spy(self, stage):
        seen[stage] = {k: v.clone() for k, v in self.model.state_dict().items()}
        teacher_probs = self.predict_all(self.data.unlabeled.images).softmax(1)
        original(self, stage)
        seen[f"targets{stage}"] = (teacher_probs.argmax(1), self.pseudo_targets.argmax(1), self.pseudo_mask.clone())
        seen[f"student{stage}"] = {k: v.clone() for k, v in self.model.state_dict().items()}

    monkeypatch.setattr(MbDML4, "begin_stage", spy)
    cfg = build_config(overrides={"method": "mbdml4", "epochs": 3, "nst_epochs": 2, "nst_rounds": 2,
                                  "nst_threshold": 0.3, "out": str(tmp_path / "run"), "progress": "off",
                                  "snapshot_images": 0})
    run_module.train(cfg)
    rows = metric_rows(tmp_path / "run")
    assert [r["stage"] for r in rows] == [0, 0, 0, 1, 1, 2, 2]
    assert set(seen) >= {1, 2}
    teacher1 = load_checkpoint(tmp_path / "run" / "best-stage0.pt")["method"]
    teacher2 = load_checkpoint(tmp_path / "run" / "best-stage1.pt")["method"]
    for stage, teacher in ((1, teacher1), (2, teacher2)):
        for key, value in seen[stage].items():
            assert torch.equal(value, teacher[f"model.{key}"]), key  # the student round starts from the teacher
        predicted, targets, mask = seen[f"targets{stage}"]
        assert torch.equal(predicted[mask], targets[mask])  # pseudo-labels are the teacher's predictions
        weight = "projection.weight"
        assert not torch.equal(seen[f"student{stage}"][weight], seen[stage][weight])  # and the student is new
    best = json.loads((tmp_path / "run" / "final_metrics.json").read_text())["best_epoch"]
    assert max(r["val_accuracy"] for r in rows) == pytest.approx(rows[best]["val_accuracy"])


def test_online_variant_uses_confident_unlabelled_images(tmp_path):
    cfg = build_config(overrides={"method": "mbdml4", "nst_variant": "online", "nst_start": 1, "epochs": 3,
                                  "c_tau": 0.5, "out": str(tmp_path / "run"), "progress": "off",
                                  "snapshot_images": 0})
    run_module.train(cfg)
    rows = metric_rows(tmp_path / "run")
    assert "train_pseudo_fraction" not in rows[0]  # before --nst-start: labelled only
    assert 0 < rows[2]["train_pseudo_fraction"] <= 1 and rows[2]["train_unlabeled"] > 0


def test_student_initialised_from_teacher_keeps_its_weights():
    cfg = build_config(overrides={"method": "mbdml4", "nst_init": "teacher", "nst_threshold": 0.3})
    data = prepare_data(cfg)
    method = run_module.METHODS["mbdml4"](run_module.EmbeddingNet(cfg.model, 1, 16), data.train, cfg)
    with torch.no_grad():
        method.head.log_weights.normal_()
    before = {k: v.clone() for k, v in method.state_dict().items() if not k.startswith("pseudo") and k != "stage"}
    method.begin_stage(1)
    after = method.state_dict()
    assert int(after["stage"]) == 1 and method.pseudo_mask.any()
    for key, value in before.items():
        if key != "head.refreshed_at":
            assert torch.equal(value, after[key]), key
    assert method.head.refreshed_at.item() == -1  # the bank is rebuilt with the student's first epoch


def test_scratch_student_restarts_from_the_teachers_initial_weights_with_its_own_noise():
    """``--nst-init scratch``: the student gets the weights the teacher started from (random or pretrained), its kernel
    weights and σ reset, and the student noise (dropout, stochastic depth) only in student stages."""
    cfg = build_config(overrides={"method": "mbdml4", "nst_threshold": 0.3, "backbone": "resnet18",
                                  "learnable_sigma": True, "nst_dropout": 0.4, "nst_stochastic_depth": 0.3})
    data = prepare_data(cfg)
    method = run_module.METHODS["mbdml4"](run_module.EmbeddingNet(cfg.model, 1, 16), data.train, cfg)
    initial = {k: v.clone() for k, v in method.model.state_dict().items()}
    method.on_epoch_start(0)
    drop_paths = [m for m in method.model.modules() if isinstance(m, DropPath)]
    assert method.model.dropout.p == 0 and all(m.p == 0 for m in drop_paths)  # the teacher: no student noise
    with torch.no_grad():  # "training" moves every weight
        for value in method.parameters():
            value.add_(0.1)
    method.begin_stage(1)
    for key, value in initial.items():
        assert torch.equal(method.model.state_dict()[key], value), key
    assert not method.head.log_weights.any()
    assert method.head.sigma.item() == pytest.approx(cfg.nngk.sigma)
    method.on_epoch_start(1)
    assert method.model.dropout.p == 0.4 and drop_paths[-1].p == pytest.approx(0.3)


def test_teacher_student_without_unlabelled_images_is_refused():
    cfg = build_config(overrides={"method": "mbdml4", "labeled_fraction": 1.0})
    data = prepare_data(cfg)
    with pytest.raises(UserError, match="no unlabelled images"):
        run_module.METHODS["mbdml4"](run_module.EmbeddingNet(cfg.model, 1, 16), data.train, cfg)


def test_a_student_trains_on_another_runs_finished_teacher(tmp_path):
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    run_module.train(build_config(overrides={"method": "mbdml4", "epochs": 2, "nst_epochs": 1, "nst_threshold": 0.3,
                                             "out": str(teacher_dir), "progress": "off", "snapshot_images": 0}))
    summary = run_module.train_student(teacher_dir, {"nst_augment": "weak", "nst_threshold": 0.2, "nst_epochs": 2,
                                                     "out": str(student_dir)})
    rows = metric_rows(student_dir)
    teacher_rows = metric_rows(teacher_dir)
    assert [r["stage"] for r in rows] == [0, 0, 1, 1]
    assert rows[:2] == teacher_rows[:2]  # the teacher's epochs, not trained again
    teacher = load_checkpoint(teacher_dir / "best-stage0.pt")["method"]
    copied = load_checkpoint(student_dir / "best-stage0.pt")["method"]
    assert all(torch.equal(teacher[k], copied[k]) for k in teacher)
    saved = build_config(student_dir / "config.yaml")
    assert (saved.nst.nst_augment, saved.nst.nst_threshold, saved.train.out) == ("weak", 0.2, str(student_dir))
    assert json.loads((student_dir / "split.json").read_text()) == json.loads((teacher_dir / "split.json").read_text())
    best = summary.metrics["best_epoch"]
    assert rows[best]["val_accuracy"] == max(r["val_accuracy"] for r in rows)

    with pytest.raises(UserError, match="lr cannot change"):
        run_module.train_student(teacher_dir, {"lr": 0.1, "out": str(tmp_path / "other")})
    with pytest.raises(UserError, match="already holds a run"):
        run_module.train_student(teacher_dir, {"out": str(student_dir)})
    (teacher_dir / "metrics.jsonl").write_text(json.dumps(teacher_rows[0]) + "\n")  # as if stopped after epoch 1
    with pytest.raises(UserError, match="has finished 1 of its 2 epochs"):
        run_module.train_student(teacher_dir, {"out": str(tmp_path / "early")})


def test_from_teacher_needs_an_mbdml4_teacher(tmp_path):
    run_module.train(build_config(overrides={"method": "nngk", "epochs": 1, "out": str(tmp_path / "nngk"),
                                             "progress": "off", "snapshot_images": 0}))
    with pytest.raises(UserError, match="is a nngk run"):
        run_module.train_student(tmp_path / "nngk", {"out": str(tmp_path / "student")})



def test_a_wider_student_is_a_new_network_whose_run_resumes_and_evaluates(tmp_path, monkeypatch):
    """``--nst-width 2``: the teacher is small-cnn, the student small-cnn with twice the channels, started from its own
    seeded random weights; checkpoints hold the network of their stage, so resuming and evaluating rebuild it."""
    overrides = {"method": "mbdml4", "epochs": 2, "nst_epochs": 2, "nst_width": 2, "nst_threshold": 0.3,
                 "progress": "off", "snapshot_images": 0}
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    summary = run_module.train(build_config(overrides=overrides | {"out": str(straight)}))
    teacher = load_checkpoint(straight / "best-stage0.pt")["method"]
    student = load_checkpoint(straight / "last.pt")["method"]
    assert teacher["model.projection.weight"].shape == (64, 256)
    assert student["model.projection.weight"].shape == (64, 512)
    assert run_module.evaluate_run(straight, "cpu")["test_accuracy"] == pytest.approx(
        summary.metrics["test_accuracy"], abs=1e-6)
    same_size = tmp_path / "same-size"
    run_module.train(build_config(overrides=overrides | {"nst_width": None, "out": str(same_size)}))
    same_teacher = load_checkpoint(same_size / "best-stage0.pt")["method"]
    assert all(torch.equal(value, same_teacher[key]) for key, value in teacher.items())  # the student's choice
    # does not change how the teacher trains

    original = run_module.Trainer._snapshot

    def snapshot_then_crash(self, epoch):
        original(self, epoch)
        if epoch == 2:
            raise Interrupt  # killed right after the student's first checkpoint

    monkeypatch.setattr(run_module.Trainer, "_snapshot", snapshot_then_crash)
    with pytest.raises(Interrupt):
        run_module.train(build_config(overrides=overrides | {"out": str(broken)}))
    monkeypatch.undo()
    assert load_checkpoint(broken / "last.pt")["epoch"] == 2  # a student checkpoint: the wide network
    run_module.resume(broken)
    a, b = load_checkpoint(straight / "last.pt")["method"], load_checkpoint(broken / "last.pt")["method"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


@pytest.mark.parametrize(("overrides", "message"), [
    ({"nst_width": 2, "nst_init": "teacher"}, "cannot start from its teacher's weights"),
    ({"nst_backbone": "resnet18", "nst_variant": "online"}, "online variant trains one network"),
    ({"nst_width": 2, "embedding_dim": 0}, "set --embedding-dim"),
])
def test_a_student_of_another_architecture_is_refused_where_it_cannot_work(overrides, message):
    cfg = build_config(overrides={"method": "mbdml4"} | overrides)
    data = prepare_data(cfg)
    with pytest.raises(UserError, match=message):
        run_module.build_method(cfg, data, torch.device("cpu"))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"backbone": "resnet18", "width": 2}, "--width scales small-cnn only"),
    ({"nst_backbone": "resnet18", "nst_width": 0.5}, "--nst-width scales small-cnn only"),
    ({"nst_width": 0}, "--nst-width must be positive"),
])
def test_width_settings_are_checked(overrides, message):
    with pytest.raises(UserError, match=message):
        build_config(overrides=overrides)


def test_a_finished_run_given_more_rounds_continues_as_if_it_had_them_from_the_start(tmp_path, monkeypatch):
    """``--resume RUN --nst-rounds N``: a finished run (here without any round, then with one) trains the added
    rounds on its last student, to the same weights as a run that had them from the start; until they are done it
    has no final metrics (a study would otherwise take it for finished), those of the shorter run are kept under
    another name; rounds cannot go, and a refused resume leaves the run's settings as they were."""
    overrides = {"method": "mbdml4", "epochs": 2, "nst_epochs": 2, "nst_threshold": 0.3, "progress": "off",
                 "snapshot_images": 0}
    straight, grown = tmp_path / "straight", tmp_path / "grown"
    run_module.train(build_config(overrides=overrides | {"nst_rounds": 2, "out": str(straight)}))
    run_module.train(build_config(overrides=overrides | {"nst_rounds": 0, "out": str(grown)}))
    run_module.resume(grown, {"nst_rounds": 1})

    def crash(self, epoch):
        raise Interrupt  # killed after the first epoch of the added round

    monkeypatch.setattr(run_module.Trainer, "_snapshot", crash)
    with pytest.raises(Interrupt):
        run_module.resume(grown, {"nst_rounds": 2})
    monkeypatch.undo()
    assert not (grown / "final_metrics.json").exists()
    assert json.loads((grown / "final_metrics-4-epochs.json").read_text())["best_epoch"] in range(4)
    summary = run_module.resume(grown)  # the interrupted extension goes on with its saved two rounds
    stages = [row["stage"] for row in metric_rows(grown)]
    assert stages == [0, 0, 1, 1, 2, 2]
    a, b = load_checkpoint(straight / "last.pt")["method"], load_checkpoint(grown / "last.pt")["method"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
    assert summary.metrics["test_accuracy"] == json.loads((straight / "final_metrics.json").read_text())[
        "test_accuracy"]
    settings = (grown / "config.yaml").read_text()
    for refused in ({"nst_rounds": 1}, {"epochs": 3}):
        with pytest.raises(UserError, match="only --nst-rounds may grow"):
            run_module.resume(grown, refused)
        assert (grown / "config.yaml").read_text() == settings


@pytest.mark.parametrize("overrides", [{"method": "nngk"}, {"method": "mbdml4", "nst_variant": "online"}])
def test_more_rounds_are_refused_where_there_are_no_rounds(tmp_path, overrides):
    run = tmp_path / "run"
    run_module.train(build_config(overrides=overrides | {"epochs": 1, "out": str(run), "progress": "off",
                                                         "snapshot_images": 0}))
    with pytest.raises(UserError, match="adds teacher -> student rounds"):
        run_module.resume(run, {"nst_rounds": 3})
