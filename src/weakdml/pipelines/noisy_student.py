"""MbDML4 as a pipeline: teacher → pseudo-label → student → pseudo-label → student … (``--nst-rounds``), or, for
the original's online variant, one trained stage.

Each student is a new network configured by the ``--nst-*`` settings (architecture, dropout, stochastic depth,
augmentation): it starts from the weights its teacher started from (re-initialised from the run's seed, or
``--pretrained``), or with ``--nst-init teacher`` from its teacher's weights. The pseudo-label stage has the
previous stage's best model (on the monitor) label the unlabelled part: the images whose NNGK probability max p ≥
``--nst-threshold`` are kept, or with ``--nst-balance`` (default) that many images spread evenly over the predicted
classes, most confident first (Xie et al.'s balancing); targets are hard (one-hot) or soft (``--nst-soft``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from weakdml.config import Config, NSTConfig
from weakdml.data.prepare import PreparedData
from weakdml.engine import dist
from weakdml.engine.checkpoint import load_checkpoint, save_atomic
from weakdml.engine.stages import Stage, StageContext, StageResult, TrainStage
from weakdml.errors import UserError
from weakdml.methods.base import Method
from weakdml.methods.noisy_student import NoisyStudent, NoisyStudentTeacher, select_pseudo_labels
from weakdml.methods.online_noisy_student import OnlineNoisyStudent

log = logging.getLogger("weakdml")


@dataclass
class PseudoLabelStage:
    """The ``teacher`` stage's best model labels the unlabelled part; writes ``pseudo_labels`` (targets, mask)."""

    name: str
    teacher: TrainStage
    round: int
    epochs: int = 0

    def check(self, data: PreparedData) -> None:
        if len(data.train.unlabeled) == 0:
            raise UserError("mbdml4 has no unlabelled images to pseudo-label: use --labeled-fraction below 1, add "
                            "--unlabeled-dir, or train mbdml3")

    def run(self, ctx: StageContext, directory: Path, first_epoch: int, ordinal: int) -> StageResult:
        method = self.teacher.build(ctx)
        method.load_state_dict(load_checkpoint(ctx.artifacts[f"{self.teacher.name}/weights"],
                                               map_location=ctx.device)["method"])
        pseudo = pseudo_labels(method, self.teacher.cfg.nst, self.round)
        if dist.is_main():
            save_atomic(pseudo, directory / "pseudo_labels.pt")
        return StageResult({"pseudo_labels": directory / "pseudo_labels.pt"})


def pseudo_labels(teacher: Method, n: NSTConfig, round_: int = 1) -> dict[str, torch.Tensor]:
    """The teacher's ``targets`` (N, C) for the unlabelled part and the ``mask`` (N,) of the images kept."""
    probs = teacher.predict_all(teacher.data.unlabeled).softmax(1).cpu()
    mask = select_pseudo_labels(probs, n.nst_threshold, n.nst_balance)
    targets = probs if n.nst_soft else F.one_hot(probs.argmax(1), probs.shape[1]).float()
    counts = torch.bincount(probs.argmax(1)[mask], minlength=probs.shape[1]).tolist()
    if mask.any():
        log.info(f"noisy student round {round_}: {int(mask.sum())} of {len(mask)} unlabelled images pseudo-labelled "
                 f"(max p ≥ {n.nst_threshold}{', balanced' if n.nst_balance else ''}); per class {counts}")
    else:
        log.warning(f"noisy student round {round_}: no unlabelled image reached max p ≥ {n.nst_threshold}; the "
                    f"student trains on the labelled part only (lower --nst-threshold to use unlabelled data)")
    return {"targets": targets, "mask": mask}


def student_config(cfg: Config) -> Config:
    """The students' settings: the teacher's, with the --nst-* architecture and noise."""
    n = cfg.nst
    model = dataclasses.replace(cfg.model, backbone=n.nst_backbone or cfg.model.backbone,
                                width=n.nst_width or cfg.model.width, dropout=n.nst_dropout,
                                stochastic_depth=n.nst_stochastic_depth)
    return dataclasses.replace(cfg, model=model, data=dataclasses.replace(cfg.data, augment=n.nst_augment))


def _check_student(cfg: Config) -> None:
    n, m = cfg.nst, cfg.model
    if (n.nst_backbone or m.backbone, n.nst_width or m.width) == (m.backbone, m.width):
        return
    if n.nst_variant == "online":
        raise UserError("the online variant trains one network: --nst-backbone and --nst-width need "
                        "--nst-variant teacher-student")
    if n.nst_init == "teacher":
        raise UserError("a student of another architecture cannot start from its teacher's weights: use "
                        "--nst-init scratch with --nst-backbone/--nst-width")
    if m.pretrained:
        raise UserError("--pretrained initialises the teacher's backbone; a student of another architecture "
                        "(--nst-backbone/--nst-width) would start random: drop one of them")
    if not m.embedding_dim:
        raise UserError("teacher and student must embed into one space for the NNGK head: set --embedding-dim "
                        "(e.g. 64) with --nst-backbone/--nst-width")


def noisy_student(cfg: Config) -> tuple[list[Stage], bool]:
    _check_student(cfg)
    if cfg.nst.nst_variant == "online":
        return [TrainStage("train", OnlineNoisyStudent, cfg, cfg.train.epochs)], False
    teacher = TrainStage("teacher", NoisyStudentTeacher, cfg, cfg.train.epochs)
    stages: list[Stage] = [teacher]
    student_cfg = student_config(cfg)
    for round_ in range(1, cfg.nst.nst_rounds + 1):
        label = PseudoLabelStage(f"label-{round_}", teacher, round_)
        init = f"{teacher.name}/weights" if cfg.nst.nst_init == "teacher" else None
        teacher = TrainStage(f"student-{round_}", NoisyStudent, student_cfg, cfg.nst.nst_epochs or cfg.train.epochs,
                             init, {"pseudo": f"{label.name}/pseudo_labels"})
        stages += [label, teacher]
    return stages, True
