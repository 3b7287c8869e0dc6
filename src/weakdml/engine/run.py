"""A run directory from start to finish: prepare data, run the method's pipeline of stages (or resume it), evaluate
the model it keeps.

A run directory holds ``config.yaml`` (resolved), ``split.json``, ``metrics.csv``/``metrics.jsonl`` (every trained
stage's epochs), ``best.pt``, ``final_metrics.json`` and ``train.log``; a one-stage run also its ``last.pt``, a
pipeline one sub-directory per stage (``00-teacher/``, ``01-label-1/``, …). It can be resumed and re-evaluated from
itself alone.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weakdml.atomic import write_json_atomic, write_text_atomic
from weakdml.config import Config, all_fields, build_config, same_setting, settings_with_role
from weakdml.data.prepare import PreparedData, prepare_data
from weakdml.engine import dist
from weakdml.engine.checkpoint import load_checkpoint, load_weights
from weakdml.engine.environment import resolve_device
from weakdml.engine.metrics_log import MetricsLog
from weakdml.engine.monitor import Monitor
from weakdml.engine.pipeline import Pipeline, kept_stage, pipeline_for, run_pipeline, sections_of
from weakdml.engine.run_folder import locked_run_folder, refuse_foreign
from weakdml.engine.stages import DONE, StageContext, TrainStage, read_done
from weakdml.engine.tasks import TASKS, Task
from weakdml.engine.trainer import amp_dtype
from weakdml.errors import UserError
from weakdml.methods.base import Method

log = logging.getLogger("weakdml")
DataCheck = Callable[[PreparedData], None]  # raises UserError if the data does not suit the caller
RESUMABLE_SETTINGS = settings_with_role("extendable", "bookkeeping", "location")


@dataclass
class RunSummary:
    run_dir: Path
    metrics: dict[str, Any]


def default_run_dir(cfg: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.data.dataset}-{cfg.train.method}-s{cfg.train.seed}-{stamp}"


def holds_run(run_dir: Path) -> bool:
    """Whether a run has started training in ``run_dir`` (a checkpoint, or a stage of a pipeline)."""
    return (run_dir / "last.pt").is_file() or any(run_dir.glob("[0-9][0-9]-*/last.pt")) \
        or any(run_dir.glob(f"[0-9][0-9]-*/{DONE}"))


def _refuse_old_layout(run_dir: Path) -> None:
    if (run_dir / "best-stage0.pt").is_file():
        raise UserError(f"{run_dir} was made by an earlier weakdml, whose Noisy Student stages shared one checkpoint; "
                        f"this version keeps each stage in a directory of its own and cannot continue or evaluate it: "
                        f"train it again")


def prepare_run(cfg: Config, pipeline: Pipeline, split_file: Path | None) -> tuple[PreparedData, Task, Monitor]:
    """The run's data (every training class keeps a labelled image unless all its methods are label-free), its
    evaluation protocol (the method's own, else the data set's) and what ``best.pt`` follows (``--monitor``, else
    the method's choice, else the task's)."""
    classes = [pipeline.stages[i].method_class for i in pipeline.trained]  # type: ignore[attr-defined]
    data = prepare_data(cfg, split_file, any(c.needs_labels for c in classes))
    task = TASKS[classes[-1].task or data.task]
    choice = cfg.train.monitor if cfg.train.monitor != "auto" else classes[-1].monitor or task.default_monitor
    return data, task, Monitor.parse(choice)


def extending_flags(method: str) -> str:
    """The flags of the settings that may grow on a finished run of ``method`` (e.g. --epochs, --nst-rounds)."""
    sections, fields = sections_of(method), all_fields()
    return ", ".join(f"--{name.replace('_', '-')}" for name in settings_with_role("extendable")
                     if fields[name][0] in sections)


def train(cfg: Config, force: bool = False, check: DataCheck | None = None) -> RunSummary:
    """Train a new run as configured and evaluate its best model on the test set. ``force``: the run folder may
    hold files that are not a run's. ``check``: the caller's own check of the prepared data, run with the stages'
    before anything is written or trained."""
    run_dir = Path(cfg.train.out) if cfg.train.out else default_run_dir(cfg)
    if not force:
        refuse_foreign(run_dir)
    with locked_run_folder(run_dir):
        if holds_run(run_dir):
            raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another "
                            f"--out")
        return _fit(cfg, run_dir, resume=False, check=check)


def resume(run_dir: Path, overrides: dict[str, Any] | None = None, check: DataCheck | None = None) -> RunSummary:
    """Continue an interrupted run, or extend a finished one (more ``--epochs`` of a one-stage run, more
    ``--nst-rounds``); only the settings in RESUMABLE_SETTINGS may change. ``check``: as for ``train``."""
    if not (run_dir / "config.yaml").is_file() or not holds_run(run_dir):
        raise UserError(f"{run_dir} is not a weakdml run directory with a checkpoint (config.yaml and last.pt)")
    _refuse_old_layout(run_dir)
    saved = build_config(run_dir / "config.yaml")
    cfg = build_config(run_dir / "config.yaml", overrides)
    changed = _changed_settings(saved, cfg, RESUMABLE_SETTINGS)
    if changed:
        raise UserError(f"cannot change {', '.join(changed)} when resuming; only {', '.join(RESUMABLE_SETTINGS)}")
    if cfg.nst.nst_rounds != saved.nst.nst_rounds and (cfg.train.method, cfg.nst.nst_variant) != (
            "mbdml4", "teacher-student"):
        raise UserError(f"--nst-rounds adds teacher -> student rounds to an mbdml4 teacher-student run; {run_dir} "
                        f"is a {cfg.train.method} run" + (" (online variant)" if cfg.train.method == "mbdml4" else ""))
    pipeline = pipeline_for(cfg)
    if pipeline.nested:
        if cfg.train.epochs != saved.train.epochs:
            raise UserError("--epochs cannot change for a run of several stages (only --nst-rounds may grow)")
        if cfg.nst.nst_rounds < saved.nst.nst_rounds:
            raise UserError(f"this run has {saved.nst.nst_rounds} noisy-student rounds: --nst-rounds cannot be fewer")
    with locked_run_folder(run_dir):
        return _fit(cfg, run_dir, resume=True, check=check)


def _changed_settings(saved: Config, given: Config, allowed: tuple[str, ...] | set[str]) -> list[str]:
    """Names of the settings outside ``allowed`` whose values differ between two configs."""
    stored = {name: value for section in saved.to_dict().values() for name, value in section.items()}
    return sorted(name for section in given.to_dict().values() for name, value in section.items()
                  if not same_setting(value, stored[name]) and name not in allowed)


def train_from_stages(source: Path, stages: int, overrides: dict[str, Any], allowed: set[str]) -> tuple[Config,
                                                                                                       Path]:
    """A new run that takes the first ``stages`` finished stages of the run ``source`` (their directories and
    metrics rows) as its own; only the settings in ``allowed`` (and bookkeeping ones) may differ. Returns the new
    run's config and directory, which ``resume`` (or ``_fit``) continues."""
    if not (source / "config.yaml").is_file():
        raise UserError(f"{source} is not a weakdml run directory (no config.yaml)")
    _refuse_old_layout(source)
    saved = build_config(source / "config.yaml")
    cfg = build_config(source / "config.yaml", overrides)
    changed = _changed_settings(saved, cfg, allowed | set(settings_with_role("bookkeeping", "location")))
    if changed:
        raise UserError(f"a run started from {source}'s stages keeps their settings; {', '.join(changed)} cannot "
                        f"change (only {', '.join(sorted(allowed))})")
    pipeline, theirs = pipeline_for(cfg), pipeline_for(saved)
    unfinished = [theirs.stages[i].name for i in range(stages) if not (theirs.directory(source, i) / DONE).is_file()]
    if not theirs.nested or unfinished:
        raise UserError(f"{source} has not finished its stage(s) {', '.join(unfinished) or '(none: one stage)'}; "
                        f"resume that run first (weakdml train --resume {source})")
    run_dir = Path(overrides["out"]) if overrides.get("out") else default_run_dir(cfg)
    if holds_run(run_dir) or run_dir.resolve() == source.resolve():
        raise UserError(f"{run_dir} already holds a run; choose another --out")
    refuse_foreign(run_dir)
    cfg.train.out = str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for i in range(stages):
        shutil.copytree(theirs.directory(source, i), pipeline.directory(run_dir, i), dirs_exist_ok=True)
    last_epoch = pipeline.first_epochs()[stages] - 1
    log_ = MetricsLog(run_dir, tensorboard=False)
    for row in MetricsLog(source, tensorboard=False).rows():
        if row["epoch"] <= last_epoch:
            log_.append(row)
    shutil.copy(source / "split.json", run_dir / "split.json")
    cfg.save(run_dir / "config.yaml")  # a run directory from now on: `weakdml train --resume` continues it
    return cfg, run_dir


def train_student(teacher_dir: Path, overrides: dict[str, Any]) -> RunSummary:
    """A new mbdml4 run on ``teacher_dir``'s finished teacher (its first stage): only the student's settings (the
    nst section, except the variant) may differ, so several students can be compared on one teacher."""
    if (teacher_dir / "config.yaml").is_file():
        saved = build_config(teacher_dir / "config.yaml")
        if saved.train.method != "mbdml4" or saved.nst.nst_variant != "teacher-student":
            raise UserError(f"{teacher_dir} is a {saved.train.method} run; --from-teacher needs an mbdml4 run with "
                            f"--nst-variant teacher-student")
    student = set(build_config().to_dict()["nst"]) - {"nst_variant"}
    cfg, run_dir = train_from_stages(teacher_dir, 1, overrides, student)
    with locked_run_folder(run_dir):
        return _fit(cfg, run_dir, resume=True)


def _fit(cfg: Config, run_dir: Path, resume: bool, check: DataCheck | None = None) -> RunSummary:
    pipeline = pipeline_for(cfg)
    data, task, monitor = prepare_run(cfg, pipeline, run_dir / "split.json" if resume else None)
    for stage in pipeline.stages:
        stage.check(data)  # before anything is written
    if check is not None:
        check(data)
    device = resolve_device(dist.start(cfg.train.device))  # torchrun's processes join here, after the checks
    run_dir.mkdir(parents=True, exist_ok=True)
    _attach_log_file(run_dir)
    finished = run_dir / "final_metrics.json"
    if resume and finished.is_file():
        try:
            done = json.loads(finished.read_text()).get("epochs") or len(MetricsLog(run_dir, tensorboard=False).rows())
        except ValueError:  # damaged: evaluated anew below
            done = pipeline.total_epochs
        if done < pipeline.total_epochs:  # a finished run given more epochs or rounds is unfinished again
            finished.replace(run_dir / f"final_metrics-{done}-epochs.json")
        else:
            log.info(f"{run_dir} has finished its {done} epochs; nothing to train (to train on: "
                     f"{extending_flags(cfg.train.method)})")
    if not resume:
        if len(data.val) == 0 and monitor.needs_evaluation:
            log.warning(f"no validation images ({len(data.train.labeled)} labelled; --val-fraction "
                        f"{cfg.data.val_fraction}): the model kept is the last epoch's; label more images or raise "
                        f"--val-fraction to select on validation")
        precision = amp_dtype(cfg.train.amp, device)
        mixed = "" if precision is None else f" ({str(precision).removeprefix('torch.')} autocast)"
        log.info(f"training {cfg.train.method} on {cfg.data.dataset} ({task.name}): {len(data.train.labeled)} "
                 f"labelled, {len(data.val)} validation, {len(data.train.unlabeled)} unlabelled, {len(data.test)} "
                 f"test; device {device}{mixed}; run directory {run_dir}")
        if task.name == "retrieval" and len(data.train.unlabeled):
            d = cfg.data
            asked = f"--labels-per-class {d.labels_per_class}" if d.labels_per_class else \
                f"--labeled-fraction {d.labeled_fraction}"
            log.warning(f"retrieval trained on the labels of {len(data.train.labeled)} of the "
                        f"{len(data.train.labeled) + len(data.train.unlabeled)} training images ({asked}); the "
                        f"retrieval benchmarks' protocol trains on all: --labeled-fraction 1")
    if dist.is_main():
        write_text_atomic(run_dir / "config.yaml", cfg.dump())  # after a resumed run's checks: a refused one keeps its
        if not (run_dir / "split.json").is_file() or not resume:
            data.split.save(run_dir / "split.json")
        write_json_atomic(run_dir / "classes.json", data.bundle.test_classes or data.bundle.classes)  # for plots
    ctx = StageContext(data, device, task, monitor, MetricsLog(run_dir))
    kept = run_pipeline(pipeline, ctx, run_dir)
    method = pipeline.stages[kept].build(ctx)  # type: ignore[attr-defined]
    metrics = final_metrics(method, data, run_dir, task)
    rows = ctx.log.rows()
    metrics["train_seconds"] = sum(row["seconds"] for row in rows)  # over every session of the run
    metrics["epochs"] = pipeline.total_epochs
    if dist.is_main():
        write_json_atomic(finished, metrics)
    value, best = metrics.get(task.primary_metric), metrics["best_epoch"] + 1
    log.info(f"{task.primary_metric} {value:.4f} (best epoch {best})" if value is not None else
             f"kept epoch {best}; {task.primary_metric} not measured (no labelled test images, or nothing to "
             f"score them with)")
    return RunSummary(run_dir, metrics)


def final_metrics(method: Method, data: PreparedData, run_dir: Path, task: Task) -> dict[str, Any]:
    """The task's test metrics of the run's kept model (``best.pt``)."""
    best = load_checkpoint(run_dir / "best.pt", map_location=method.device)
    load_weights(method, best["method"], run_dir / "best.pt")
    metrics = task.final_metrics(method, data)
    return {"task": task.name, "primary_metric": task.primary_metric, **metrics, "best_epoch": int(best["epoch"])}



def _attach_log_file(run_dir: Path) -> None:
    log.setLevel(logging.INFO if dist.is_main() else logging.ERROR)  # one process tells what happens
    if not dist.is_main():
        return
    for handler in list(log.handlers):
        if isinstance(handler, logging.FileHandler):
            log.removeHandler(handler)
            handler.close()
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8", errors="backslashreplace")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)


def load_run(run_dir: Path, device: str = "auto", data_root: str | None = None, stage: str | None = None
             ) -> tuple[Config, PreparedData, Method, Task]:
    """Rebuild a run's data, split, task and the method of the stage its ``best.pt`` comes from (or of the finished
    trained ``stage`` named), with those weights (for evaluation, embeddings and plots)."""
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "best.pt").is_file():
        raise UserError(f"{run_dir} is not a weakdml run directory with a trained model (config.yaml and best.pt)")
    _refuse_old_layout(run_dir)
    cfg = build_config(run_dir / "config.yaml", {"device": device, "data_root": data_root})
    pipeline = pipeline_for(cfg)
    index = kept_stage(pipeline, run_dir) if stage is None else finished_trained_stage(pipeline, run_dir, stage)
    weights = run_dir / "best.pt" if stage is None else pipeline.directory(run_dir, index) / "best.pt"
    data, task, monitor = prepare_run(cfg, pipeline, run_dir / "split.json")
    trained = pipeline.stages[index]
    assert isinstance(trained, TrainStage)
    device = resolve_device(dist.start(cfg.train.device))  # under torchrun, each process its share of the images
    method = trained.build(StageContext(data, device, task, monitor, MetricsLog(run_dir, tensorboard=False),
                                        _artifacts(pipeline, run_dir)))
    load_weights(method, load_checkpoint(weights, map_location=method.device)["method"], weights)
    return cfg, data, method, task


def finished_trained_stage(pipeline: Pipeline, run_dir: Path, name: str) -> int:
    """The index of the trained stage ``name`` of a run, which has finished it; else a UserError saying why not."""
    names = [s.name for s in pipeline.stages]
    trained = [names[i] for i in pipeline.trained]
    if name not in trained:
        what = "trains no network" if name in names else "is not one of its stages"
        raise UserError(f"the {name} stage of {run_dir} {what}: give one of {', '.join(trained)}")
    index = names.index(name)
    if not (pipeline.directory(run_dir, index) / DONE).is_file():
        raise UserError(f"{run_dir} has not finished its {name} stage")
    return index


def _artifacts(pipeline: Pipeline, run_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for i, stage in enumerate(pipeline.stages):
        result = read_done(pipeline.directory(run_dir, i))
        if result is not None:
            found |= {f"{stage.name}/{k}": p for k, p in result.artifacts.items()}
    return found


def evaluate_run(run_dir: Path, device: str = "auto", data_root: str | None = None) -> dict[str, Any]:
    """Recompute the test metrics of a run from its saved best model."""
    _, data, method, task = load_run(run_dir, device, data_root)
    return final_metrics(method, data, run_dir, task)
