"""Stages of a run: a trained method, or a computation (e.g. pseudo-labelling) that reads the artifacts of earlier
stages and writes its own. A stage works in its own directory and is resumable: a finished one has ``stage.json``
(its artifacts and, for a trained stage, its best monitor value) and is skipped; a trained one resumes from its
``last.pt``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from weakdml.atomic import write_text_atomic
from weakdml.config import Config
from weakdml.data.prepare import PreparedData
from weakdml.engine.checkpoint import load_checkpoint
from weakdml.engine.environment import seed_everything
from weakdml.engine.metrics_log import MetricsLog
from weakdml.engine.monitor import Monitor
from weakdml.engine.tasks import Task
from weakdml.engine.trainer import Trainer
from weakdml.errors import UserError
from weakdml.methods.base import Method
from weakdml.models.embedding import EmbeddingNet, channel_stats
from weakdml.models.pretrained import load_pretrained

log = logging.getLogger("weakdml")
DONE = "stage.json"


@dataclass
class StageContext:
    """What a stage works with: the data, the device, the task and monitor, the run's metrics log, and the
    artifacts (files) written by the stages before it, by "<stage>/<name>"."""

    data: PreparedData
    device: torch.device
    task: Task
    monitor: Monitor
    log: MetricsLog
    artifacts: dict[str, Path] = field(default_factory=dict)


@dataclass
class StageResult:
    artifacts: dict[str, Path]
    best: float | None = None  # a trained stage's best monitor value
    epochs: int = 0  # the epochs it was run for (a finished stage given more epochs is unfinished again)


class Stage(Protocol):
    name: str
    epochs: int  # 0 for a computation

    def check(self, data: PreparedData) -> None: ...  # refuse data it cannot work on, before anything runs

    def run(self, ctx: StageContext, directory: Path, first_epoch: int, ordinal: int) -> StageResult: ...


def build_method(cfg: Config, method_class: type[Method], data: PreparedData, device: torch.device,
                 **inputs: Any) -> Method:
    """The method with a new network (from the run's seed, so that a stage's start does not depend on what ran
    before it), input normalisation from the labelled images, and ``--pretrained`` weights if given."""
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    if cfg.model.l2_normalize is None:
        cfg.model.l2_normalize = method_class.l2_normalizes(cfg)
    sample = data.train.labeled if len(data.train.labeled) else data.train.unlabeled
    mean, std = channel_stats(sample)
    model = EmbeddingNet(cfg.model, data.bundle.channels, data.bundle.image_size, mean, std)
    if cfg.model.pretrained:
        log.info(load_pretrained(model.backbone, cfg.model.pretrained, cfg.model, data.bundle.channels))
    return method_class(model, data.train, cfg, **inputs).to(device)


@torch.no_grad()
def _check_input_size(model: EmbeddingNet, backbone: str, shape: tuple[int, int, int]) -> None:
    """Refuse images (C, H, W) too small for the backbone's downsampling before anything is written."""
    try:
        model.eval()(torch.zeros(2, *shape))
    except RuntimeError as error:
        if "size" not in str(error):
            raise
        raise UserError(f"images of {shape[1]} x {shape[2]} px (height x width) are too small for {backbone}: raise "
                        f"--input-size" + (" (small-cnn needs 8)" if backbone == "small-cnn" else "")) from None
    model.train()


@dataclass
class TrainStage:
    """Train ``method_class`` with ``cfg`` for ``epochs``. ``init``: the artifact of weights it starts from (else new
    weights); ``inputs``: keyword arguments of the method, each read from an artifact (a dict of tensors)."""

    name: str
    method_class: type[Method]
    cfg: Config
    epochs: int
    init: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)

    def check(self, data: PreparedData) -> None:
        """Refuse data the method cannot learn from, images too small for the network, and ``--pretrained`` weights
        that do not fit it, before anything is written."""
        self.method_class.check_data(self.cfg, data.train)
        model = EmbeddingNet(self.cfg.model, data.bundle.channels, data.bundle.image_size)
        _check_input_size(model, self.cfg.model.backbone, data.bundle.train.shape)
        if self.cfg.model.pretrained:
            load_pretrained(model.backbone, self.cfg.model.pretrained, self.cfg.model, data.bundle.channels)

    def build(self, ctx: StageContext) -> Method:
        loaded = {key: load_checkpoint(ctx.artifacts[artifact]) for key, artifact in self.inputs.items()}
        return build_method(self.cfg, self.method_class, ctx.data, ctx.device, **loaded)

    def run(self, ctx: StageContext, directory: Path, first_epoch: int, ordinal: int) -> StageResult:
        method = self.build(ctx)
        trainer = Trainer(self.cfg, method, ctx.task, ctx.monitor, ctx.data, directory, ctx.log, self.epochs,
                          first_epoch, ordinal)
        if (directory / "last.pt").is_file():
            trainer.resume()
            if trainer.start_epoch < trainer.end_epoch:
                log.info(f"stage {self.name}: resumed at epoch {trainer.start_epoch + 1}")
        else:
            trainer.start()
            if self.init:
                method.start_from(load_checkpoint(ctx.artifacts[self.init], map_location=ctx.device)["method"])
        trainer.fit()
        return StageResult({"weights": directory / "best.pt"}, trainer.best, self.epochs)


def read_done(directory: Path) -> StageResult | None:
    """The result of a finished stage (None while unfinished)."""
    path = directory / DONE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return StageResult({k: directory / v for k, v in raw["artifacts"].items()}, raw.get("best"), raw["epochs"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} is damaged; delete it to run that stage again") from None


def write_done(directory: Path, result: StageResult) -> None:
    raw = {"artifacts": {k: str(p.relative_to(directory)) for k, p in result.artifacts.items()}, "best": result.best,
           "epochs": result.epochs}
    write_text_atomic(directory / DONE, json.dumps(raw, indent=2))

