"""A run as a pipeline of stages. Most methods are one trained stage, which writes straight into the run directory;
a method that registers a pipeline (``weakdml.pipelines``) gets one sub-directory per stage, ``NN-<name>``. Stages
run in order; finished ones are skipped, so an interrupted run resumes at the stage (and epoch) where it stopped and
a finished one given more stages (more Noisy Student rounds) runs only those. Epochs are numbered across the trained
stages. The run's model is the best of its trained stages by the monitor (ties: the later), copied to the run's
``best.pt`` with the stage it came from.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from weakdml.config import SECTIONS, Config, build_config
from weakdml.engine import dist
from weakdml.engine.checkpoint import load_checkpoint, save_atomic
from weakdml.engine.stages import Stage, StageContext, TrainStage, read_done, write_done
from weakdml.errors import UserError
from weakdml.methods import METHODS
from weakdml.pipelines import PIPELINES

log = logging.getLogger("weakdml")


@dataclass
class Pipeline:
    stages: list[Stage]
    nested: bool = False  # each stage in a sub-directory of its own (else the one stage uses the run directory)

    def directory(self, run_dir: Path, index: int) -> Path:
        return run_dir / f"{index:02d}-{self.stages[index].name}" if self.nested else run_dir

    def first_epochs(self) -> list[int]:
        """The global number of each stage's first epoch."""
        starts, epoch = [], 0
        for stage in self.stages:
            starts.append(epoch)
            epoch += stage.epochs
        return starts

    @property
    def trained(self) -> list[int]:
        return [i for i, stage in enumerate(self.stages) if isinstance(stage, TrainStage)]

    @property
    def total_epochs(self) -> int:
        return sum(stage.epochs for stage in self.stages)


def method_names() -> list[str]:
    """Every name ``--method`` accepts, in the registry's order."""
    return list(METHODS)


GENERAL_SECTIONS = ("data", "model", "optim", "train")  # read by every method


def sections_of(method: str) -> tuple[str, ...]:
    """The config sections a method's settings live in: the general ones and those of its trained stages."""
    pipeline = pipeline_for(build_config(overrides={"method": method}))
    own = [s for i in pipeline.trained for s in pipeline.stages[i].method_class.sections]  # type: ignore[attr-defined]
    return tuple(dict.fromkeys([*GENERAL_SECTIONS, *own]))


def pipeline_for(cfg: Config) -> Pipeline:
    name = cfg.train.method
    if name in PIPELINES:
        stages, nested = PIPELINES[name](cfg)
        pipeline = Pipeline(stages, nested)
    elif name in METHODS:
        pipeline = Pipeline([TrainStage("train", METHODS[name], cfg, cfg.train.epochs)])
    else:
        raise UserError(f"unknown method '{name}'; choose one of {', '.join(method_names())}")
    _check_switches(cfg, pipeline)
    return pipeline


def _check_switches(cfg: Config, pipeline: Pipeline) -> None:
    """Refuse a section's switch (``--iaa``, ``--mdr``: a boolean named after its section) that the method does not
    read, rather than train without it."""
    read = {s for i in pipeline.trained for s in pipeline.stages[i].method_class.sections}  # type: ignore[attr-defined]
    for section in SECTIONS:
        if getattr(getattr(cfg, section), section, False) is True and section not in read:
            users = [m for m in method_names() if section in sections_of(m)]
            raise UserError(f"--{section} does not apply to --method {cfg.train.method}; it works with "
                            f"{', '.join(users)}")


def run_pipeline(pipeline: Pipeline, ctx: StageContext, run_dir: Path) -> int:
    """Run every unfinished stage; returns the index of the trained stage whose model the run keeps."""
    chosen: tuple[int, float] | None = None
    for index, (stage, first_epoch) in enumerate(zip(pipeline.stages, pipeline.first_epochs())):
        directory = pipeline.directory(run_dir, index)
        directory.mkdir(parents=True, exist_ok=True)
        result = read_done(directory)
        if result is None or result.epochs != stage.epochs:
            if pipeline.nested:
                log.info(f"stage {index + 1}/{len(pipeline.stages)}: {stage.name} in {directory}")
            ordinal = sum(isinstance(s, TrainStage) for s in pipeline.stages[:index])
            result = stage.run(ctx, directory, first_epoch, ordinal)
            if dist.is_main():
                write_done(directory, result)
            dist.barrier()  # the other processes read what rank 0 wrote (weights, pseudo-labels)
        ctx.artifacts |= {f"{stage.name}/{key}": path for key, path in result.artifacts.items()}
        value = math.nan if result.best is None else result.best
        if isinstance(stage, TrainStage) and (chosen is None or ctx.monitor.improves(value, chosen[1])):
            chosen = (index, value)
    assert chosen is not None, "a pipeline trains at least one stage"
    if pipeline.nested and dist.is_main():
        best = load_checkpoint(pipeline.directory(run_dir, chosen[0]) / "best.pt")
        save_atomic(best | {"stage": chosen[0]}, run_dir / "best.pt")
    dist.barrier()
    return chosen[0]


def kept_stage(pipeline: Pipeline, run_dir: Path) -> int:
    """The index of the stage whose model a run's ``best.pt`` holds."""
    best = load_checkpoint(run_dir / "best.pt")
    return int(best.get("stage", pipeline.trained[-1]))
