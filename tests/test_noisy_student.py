"""Noisy Student (MbDML4): pseudo-labels come from the teacher's predictions only, an empty confident set is handled,
and the pipeline's rounds (teacher -> pseudo-label -> student, each stage in its own directory) hand the teacher's
best weights to a re-initialised or continued student."""

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
from weakdml.engine.pipeline import pipeline_for
from weakdml.engine.stages import build_method
from weakdml.engine.trainer import Trainer, load_batch
from weakdml.errors import UserError
from weakdml.methods import Batch
from weakdml.methods.noisy_student import NoisyStudent, NoisyStudentTeacher, select_pseudo_labels, soft_cross_entropy
from weakdml.models.backbones import DropPath
from weakdml.pipelines.noisy_student import pseudo_labels


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
    """MbDML4's teacher on 12 labelled and 30 unlabelled random images, its bank built and its kernel weights
    random."""
    m, g = tiny_method("mbdml4", 12, 3, n_unlabeled=30, **{"neighbours": 5, "sigma": 0.7, **overrides})
    m.on_epoch_start(0)
    m.head.log_weights.data.normal_(0, 0.3, generator=g)
    return m


def student_of(teacher, pseudo):
    """A student on the teacher's data with the teacher's weights (``--nst-init teacher``)."""
    student = NoisyStudent(teacher.model, teacher.data, teacher.cfg, pseudo)
    student.start_from(teacher.state_dict())
    return student


@pytest.mark.parametrize("soft,balance", [(False, True), (True, False)])
def test_student_pseudo_labels_and_loss_equal_reference(soft, balance):
    """The student's targets are the teacher's kernel predictions (one-hot or its probabilities) on the images the
    selection rule keeps; its loss is the MbDML3 loss plus scale_nst x the cross-entropy of its kernel scores on a
    batch of unlabelled_ratio x as many of those images."""
    m = tiny_mbdml4(nst_soft=soft, nst_balance=balance, nst_threshold=0.5, nst_init="teacher", augment="none",
                    scale_nst=1.5, unlabeled_ratio=2, batch_size=4, beta=0.5, scale_mixup=3.0)
    teacher = kernel_scores_reference(m.head, m.embed_all(m.data.unlabeled)).softmax(1).float()
    pseudo = pseudo_labels(m, m.cfg.nst)
    assert torch.equal(pseudo["mask"], select_pseudo_labels(teacher, 0.5, balance))
    assert 0 < int(pseudo["mask"].sum()) < 30
    expected = teacher if soft else F.one_hot(teacher.argmax(1), 3).float()
    torch.testing.assert_close(pseudo["targets"], expected)

    student = student_of(m, pseudo)
    student.seed_epoch(1)
    student.on_epoch_start(1)
    batch = load_batch(student, next(iter(student.batches(1))))
    assert len(batch.unlabeled_index) == 8 and pseudo["mask"][batch.unlabeled_index].all()
    assert torch.equal(batch.unlabeled_images, m.data.unlabeled.images[batch.unlabeled_index])
    losses = student.training_step(batch)
    scores = kernel_scores_reference(student.head, student.model(batch.unlabeled_images.float() / 255))
    reference = -(expected[batch.unlabeled_index] * F.log_softmax(scores, 1)).sum(1).mean()
    torch.testing.assert_close(losses["unlabeled"].double(), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["loss"], 0.5 * losses["nngk"] + 3.0 * losses["mixup"] + 1.5 * reference.float())


def test_online_pseudo_loss_equals_reference():
    """The original's online rule: an unlabelled image is kept when its max kernel probability (weak view) exceeds
    c_tau x the mean max probability of the clean labelled batch; its loss is the cross-entropy of the strong view
    against that prediction. Nothing kept: exactly zero."""
    m = tiny_mbdml4(nst_variant="online", nst_start=0)
    kinds = []

    def plain_view(images, kind=None, rows=None):  # records the views asked for; no random draws to reproduce
        kinds.append(kind)
        return images.float() / 255

    m.view = plain_view
    idx = torch.tensor([0, 4, 5, 7])
    batch = load_batch(m, Batch(idx, torch.arange(10)))
    unlabeled = batch.unlabeled_images
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
        losses.append([m.training_step(load_batch(m, batch)) for batch in list(m.batches(0))])
    assert any(step["pseudo_fraction"] > 0 for step in losses[0])
    for a, b in zip(*losses):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def student_after_one_round(unlabeled_labels: torch.Tensor, threshold: float = 0.3):
    """A teacher trained for 2 epochs, its pseudo-labels and one step of its student; returns what depends on
    data: the student, the step's losses and the teacher's probabilities on the unlabelled images."""
    cfg = build_config(overrides={"method": "mbdml4", "epochs": 2, "nst_threshold": threshold, "seed": 0})
    data = prepare_data(cfg)
    data.train = TrainData(data.train.labeled, ImageSet(torch.cat([data.train.unlabeled.load(torch.arange(
        len(data.train.unlabeled)))]), unlabeled_labels), data.train.num_classes, data.train.flip)
    method = build_method(cfg, NoisyStudentTeacher, data, torch.device("cpu"))
    opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    for epoch in range(2):
        method.train()
        method.seed_epoch(epoch)
        method.on_epoch_start(epoch)
        for batch in list(method.batches(epoch)):
            opt.zero_grad()
            method.training_step(load_batch(method, batch))["loss"].backward()
            opt.step()
    teacher_probs = method.predict_all(data.train.unlabeled).softmax(1)
    pseudo = pseudo_labels(method, cfg.nst)
    student = build_method(cfg, NoisyStudent, data, torch.device("cpu"), pseudo=pseudo)
    student.train()
    student.seed_epoch(2)
    student.on_epoch_start(2)
    batch = load_batch(student, next(iter(student.batches(2))))
    return student, student.training_step(batch), teacher_probs


def test_unlabelled_labels_are_never_read():
    """Poisoned labels (the true ones, or garbage) on the unlabelled part change nothing."""
    cfg = build_config()
    data = prepare_data(cfg)
    assert (data.train.unlabeled.labels == -1).all()  # what training code gets
    true_labels = data.bundle.train.labels[torch.tensor(data.split.unlabeled)]
    garbage = torch.randint(0, 10, true_labels.shape, generator=torch.Generator().manual_seed(9))
    a, losses_a, _ = student_after_one_round(true_labels)
    b, losses_b, _ = student_after_one_round(garbage)
    assert a.mask.any()
    assert torch.equal(a.mask, b.mask) and torch.equal(a.targets, b.targets)
    assert torch.equal(losses_a["loss"], losses_b["loss"])


def test_pseudo_labels_are_the_teachers_predictions_and_empty_set_is_handled(caplog):
    student, losses, teacher_probs = student_after_one_round(torch.full((1295,), -1), threshold=0.3)
    confident = int((teacher_probs.max(1).values >= 0.3).sum())
    assert 0 < confident < 1295 and int(student.mask.sum()) == confident  # balancing keeps how many
    assert torch.equal(student.targets, F.one_hot(teacher_probs.argmax(1), 10).float())  # hard targets
    assert losses["unlabeled"] > 0 and losses["loss"] > losses["unlabeled"]
    with caplog.at_level(logging.WARNING, logger="weakdml"):
        empty, losses, _ = student_after_one_round(torch.full((1295,), -1), threshold=1.01)
    assert not empty.mask.any()
    assert "no unlabelled image" in caplog.text
    assert torch.isfinite(losses["loss"]) and "unlabeled" not in losses  # labelled-only student step


def record_stage_starts(monkeypatch) -> dict:
    """Record, as each trained stage begins, its first epoch, its network's weights and its method."""
    starts = {}
    original = Trainer.fit

    def spy(self):
        if self.start_epoch == self.first_epoch:
            starts[self.stage] = (self.first_epoch, {k: v.clone() for k, v in self.method.state_dict().items()},
                                  self.method)
        original(self)

    monkeypatch.setattr(Trainer, "fit", spy)
    return starts


def test_rounds_hand_over_teacher_to_student(tmp_path, monkeypatch):
    """Each student is labelled by its teacher's best weights and starts from the weights its teacher started from;
    each stage has its directory, epochs are numbered across them, and the run keeps the best stage's model."""
    starts = record_stage_starts(monkeypatch)
    run = tmp_path / "run"
    cfg = build_config(overrides={"method": "mbdml4", "epochs": 3, "nst_epochs": 2, "nst_rounds": 2,
                                  "nst_threshold": 0.3, "out": str(run), "progress": "off", "snapshot_images": 0})
    run_module.train(cfg)
    rows = metric_rows(run)
    assert [r["stage"] for r in rows] == [0, 0, 0, 1, 1, 2, 2] and [r["epoch"] for r in rows] == list(range(7))
    assert sorted(p.name for p in run.iterdir() if p.is_dir() and p.name[0].isdigit()) == [
        "00-teacher", "01-label-1", "02-student-1", "03-label-2", "04-student-2"]
    assert [starts[s][0] for s in (0, 1, 2)] == [0, 3, 5]
    for stage, teacher_dir, label_dir in ((1, "00-teacher", "01-label-1"), (2, "02-student-1", "03-label-2")):
        weights = {k: v for k, v in starts[stage][1].items() if k.startswith("model.")}
        for key, value in weights.items():
            assert torch.equal(value, starts[0][1][key]), key  # a scratch student: the teacher's initial weights
        teacher = starts[stage - 1][2]
        teacher.load_state_dict(load_checkpoint(run / teacher_dir / "best.pt")["method"])
        predicted = teacher.predict_all(teacher.data.unlabeled).argmax(1)
        pseudo = load_checkpoint(run / label_dir / "pseudo_labels.pt")
        assert pseudo["mask"].any() and torch.equal(predicted[pseudo["mask"]], pseudo["targets"].argmax(1)[
            pseudo["mask"]])
    best = json.loads((run / "final_metrics.json").read_text())["best_epoch"]
    assert max(r["val_accuracy"] for r in rows) == pytest.approx(rows[best]["val_accuracy"])


def test_online_variant_uses_confident_unlabelled_images(tmp_path):
    cfg = build_config(overrides={"method": "mbdml4", "nst_variant": "online", "nst_start": 1, "epochs": 3,
                                  "c_tau": 0.5, "out": str(tmp_path / "run"), "progress": "off",
                                  "snapshot_images": 0})
    run_module.train(cfg)
    rows = metric_rows(tmp_path / "run")
    assert (tmp_path / "run" / "last.pt").is_file()  # one stage: the run directory is its directory
    assert "train_pseudo_fraction" not in rows[0]  # before --nst-start: labelled only
    assert 0 < rows[2]["train_pseudo_fraction"] <= 1 and rows[2]["train_unlabeled"] > 0


def test_student_initialised_from_teacher_keeps_its_weights(tmp_path, monkeypatch):
    """``--nst-init teacher``: the student starts from its teacher's best weights (kernel weights included) and
    builds its own bank at its first epoch."""
    starts = record_stage_starts(monkeypatch)
    run = tmp_path / "run"
    run_module.train(build_config(overrides={"method": "mbdml4", "epochs": 2, "nst_epochs": 1, "nst_init": "teacher",
                                             "nst_threshold": 0.3, "out": str(run), "progress": "off",
                                             "snapshot_images": 0}))
    teacher = load_checkpoint(run / "00-teacher" / "best.pt")["method"]
    student_start = starts[1][1]
    assert teacher["head.log_weights"].any()
    for key, value in teacher.items():
        if key != "head.refreshed_at":
            assert torch.equal(value, student_start[key]), key
    assert student_start["head.refreshed_at"].item() == -1


def test_scratch_student_restarts_from_the_teachers_initial_weights_with_its_own_noise(tmp_path, monkeypatch):
    """``--nst-init scratch``: the student gets the weights the teacher started from, its kernel weights and σ
    reset, and the student noise (dropout, stochastic depth) only in student stages."""
    starts = record_stage_starts(monkeypatch)
    run_module.train(build_config(overrides={
        "method": "mbdml4", "nst_threshold": 0.3, "backbone": "resnet18", "learnable_sigma": True, "nst_dropout": 0.4,
        "nst_stochastic_depth": 0.3, "epochs": 1, "nst_epochs": 1, "out": str(tmp_path / "run"), "progress": "off",
        "snapshot_images": 0}))
    (_, teacher_start, teacher), (_, student_start, student) = starts[0], starts[1]
    for key, value in teacher_start.items():
        assert torch.equal(student_start[key], value) or key == "head.refreshed_at", key
    assert not student_start["head.log_weights"].any()
    assert student_start["head.log_sigma"].exp().item() == pytest.approx(0.3)
    teacher_paths = [m for m in teacher.model.modules() if isinstance(m, DropPath)]
    student_paths = [m for m in student.model.modules() if isinstance(m, DropPath)]
    assert teacher.model.dropout.p == 0 and all(m.p == 0 for m in teacher_paths)  # the teacher: no student noise
    assert student.model.dropout.p == 0.4 and student_paths[-1].p == pytest.approx(0.3)


def test_teacher_student_without_unlabelled_images_is_refused(tmp_path):
    cfg = build_config(overrides={"method": "mbdml4", "labeled_fraction": 1.0, "out": str(tmp_path / "run")})
    with pytest.raises(UserError, match="no unlabelled images"):
        run_module.train(cfg)
    assert not (tmp_path / "run" / "00-teacher" / "last.pt").exists()  # refused before training


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
    teacher = load_checkpoint(teacher_dir / "00-teacher" / "best.pt")["method"]
    copied = load_checkpoint(student_dir / "00-teacher" / "best.pt")["method"]
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
    (teacher_dir / "00-teacher" / "stage.json").unlink()  # as if stopped before the teacher finished
    with pytest.raises(UserError, match="has not finished its stage.s. teacher"):
        run_module.train_student(teacher_dir, {"out": str(tmp_path / "early")})


def test_from_teacher_needs_an_mbdml4_teacher(tmp_path):
    run_module.train(build_config(overrides={"method": "nngk", "epochs": 1, "out": str(tmp_path / "nngk"),
                                             "progress": "off", "snapshot_images": 0}))
    with pytest.raises(UserError, match="is a nngk run"):
        run_module.train_student(tmp_path / "nngk", {"out": str(tmp_path / "student")})


def test_runs_of_the_earlier_one_checkpoint_layout_are_refused_with_a_clear_line(tmp_path):
    run = tmp_path / "old"
    run_module.train(build_config(overrides={"method": "nngk", "epochs": 1, "out": str(run), "progress": "off",
                                             "snapshot_images": 0}))
    (run / "best-stage0.pt").write_bytes((run / "best.pt").read_bytes())
    for call in (lambda: run_module.resume(run), lambda: run_module.evaluate_run(run, "cpu")):
        with pytest.raises(UserError, match="made by an earlier weakdml"):
            call()


def test_a_wider_student_is_a_new_network_whose_run_resumes_and_evaluates(tmp_path, monkeypatch):
    """``--nst-width 2``: the teacher is small-cnn, the student small-cnn with twice the channels, started from its own
    seeded random weights; each stage's checkpoints hold its own network, so resuming and evaluating rebuild it."""
    overrides = {"method": "mbdml4", "epochs": 2, "nst_epochs": 2, "nst_width": 2, "nst_threshold": 0.3,
                 "progress": "off", "snapshot_images": 0}
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    summary = run_module.train(build_config(overrides=overrides | {"out": str(straight)}))
    teacher = load_checkpoint(straight / "00-teacher" / "best.pt")["method"]
    student = load_checkpoint(straight / "02-student-1" / "last.pt")["method"]
    assert teacher["model.projection.weight"].shape == (64, 256)
    assert student["model.projection.weight"].shape == (64, 512)
    assert run_module.evaluate_run(straight, "cpu")["test_accuracy"] == pytest.approx(
        summary.metrics["test_accuracy"], abs=1e-6)
    same_size = tmp_path / "same-size"
    run_module.train(build_config(overrides=overrides | {"nst_width": None, "out": str(same_size)}))
    same_teacher = load_checkpoint(same_size / "00-teacher" / "best.pt")["method"]
    assert all(torch.equal(value, same_teacher[key]) for key, value in teacher.items())  # the student's choice
    # does not change how the teacher trains

    original = Trainer._snapshot

    def snapshot_then_crash(self, epoch):
        original(self, epoch)
        if epoch == 2:
            raise Interrupt  # killed right after the student's first checkpoint

    monkeypatch.setattr(Trainer, "_snapshot", snapshot_then_crash)
    with pytest.raises(Interrupt):
        run_module.train(build_config(overrides=overrides | {"out": str(broken)}))
    monkeypatch.undo()
    assert load_checkpoint(broken / "02-student-1" / "last.pt")["epoch"] == 2  # a student checkpoint
    run_module.resume(broken)
    a = load_checkpoint(straight / "02-student-1" / "last.pt")["method"]
    b = load_checkpoint(broken / "02-student-1" / "last.pt")["method"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


@pytest.mark.parametrize(("overrides", "message"), [
    ({"nst_width": 2, "nst_init": "teacher"}, "cannot start from its teacher's weights"),
    ({"nst_backbone": "resnet18", "nst_variant": "online"}, "online variant trains one network"),
    ({"nst_width": 2, "embedding_dim": 0}, "set --embedding-dim"),
])
def test_a_student_of_another_architecture_is_refused_where_it_cannot_work(overrides, message):
    with pytest.raises(UserError, match=message):
        pipeline_for(build_config(overrides={"method": "mbdml4"} | overrides))


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

    monkeypatch.setattr(Trainer, "_snapshot", crash)
    with pytest.raises(Interrupt):
        run_module.resume(grown, {"nst_rounds": 2})
    monkeypatch.undo()
    assert not (grown / "final_metrics.json").exists()
    assert json.loads((grown / "final_metrics-4-epochs.json").read_text())["best_epoch"] in range(4)
    summary = run_module.resume(grown)  # the interrupted extension goes on with its saved two rounds
    stages = [row["stage"] for row in metric_rows(grown)]
    assert stages == [0, 0, 1, 1, 2, 2]
    a = load_checkpoint(straight / "04-student-2" / "last.pt")["method"]
    b = load_checkpoint(grown / "04-student-2" / "last.pt")["method"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
    assert summary.metrics["test_accuracy"] == json.loads((straight / "final_metrics.json").read_text())[
        "test_accuracy"]
    settings = (grown / "config.yaml").read_text()
    for refused, message in (({"nst_rounds": 1}, "cannot be fewer"), ({"epochs": 3}, "only --nst-rounds may grow")):
        with pytest.raises(UserError, match=message):
            run_module.resume(grown, refused)
        assert (grown / "config.yaml").read_text() == settings


@pytest.mark.parametrize("overrides", [{"method": "nngk"}, {"method": "mbdml4", "nst_variant": "online"}])
def test_more_rounds_are_refused_where_there_are_no_rounds(tmp_path, overrides):
    run = tmp_path / "run"
    run_module.train(build_config(overrides=overrides | {"epochs": 1, "out": str(run), "progress": "off",
                                                         "snapshot_images": 0}))
    with pytest.raises(UserError, match="adds teacher -> student rounds"):
        run_module.resume(run, {"nst_rounds": 3})
