"""A run directory from start to finish: prepare data and model, train (or resume), evaluate the best model.

A run directory holds ``config.yaml`` (resolved), ``split.json``, ``metrics.csv``/``metrics.jsonl``, ``last.pt``,
``best.pt``, ``final_metrics.json`` and ``train.log``; it can be resumed and re-evaluated from itself alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from weakdml.atomic import write_json_atomic
from weakdml.config import DATA_LOCATION, Config, build_config, same_setting
from weakdml.data.prepare import PreparedData, prepare_data
from weakdml.engine.checkpoint import load_checkpoint, load_weights
from weakdml.engine.environment import resolve_device, seed_everything
from weakdml.engine.run_folder import locked_run_folder, refuse_foreign
from weakdml.engine.trainer import Trainer, evaluate_accuracy
from weakdml.errors import UserError
from weakdml.evaluation.report import evaluate_embeddings
from weakdml.methods import METHODS, Method
from weakdml.models.embedding import EmbeddingNet, channel_stats
from weakdml.models.pretrained import load_pretrained

log = logging.getLogger("weakdml")
RESUMABLE_SETTINGS = ("epochs", "nst_rounds", "device", "progress", "eval_batch_size", *DATA_LOCATION)


@dataclass
class RunSummary:
    run_dir: Path
    metrics: dict[str, Any]


def default_run_dir(cfg: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.data.dataset}-{cfg.train.method}-s{cfg.train.seed}-{stamp}"


def build_method(cfg: Config, data: PreparedData, device: torch.device) -> Method:
    if cfg.train.method not in METHODS:
        raise UserError(f"unknown method '{cfg.train.method}'; choose one of {', '.join(METHODS)}")
    method_class = METHODS[cfg.train.method]
    if cfg.model.l2_normalize is None:
        cfg.model.l2_normalize = method_class.l2_normalize_by_default  # saved resolved in config.yaml
    mean, std = channel_stats(data.train.labeled.images)
    model = EmbeddingNet(cfg.model, data.bundle.channels, data.bundle.image_size, mean, std)
    _check_input_size(model, cfg.model.backbone, data.train.labeled.images.shape[1:])
    if cfg.model.pretrained:
        log.info(load_pretrained(model.backbone, cfg.model.pretrained))
    return method_class(model, data.train, cfg).to(device)


@torch.no_grad()
def _check_input_size(model: EmbeddingNet, backbone: str, shape: torch.Size) -> None:
    """Refuse images (C, H, W) too small for the backbone's downsampling before anything is written."""
    try:
        model.eval()(torch.zeros(2, *shape))
    except RuntimeError as error:
        if "size" not in str(error):
            raise
        raise UserError(f"images of {shape[1]} x {shape[2]} px (height x width) are too small for {backbone}: raise "
                        f"--input-size"
                        + (" (small-cnn needs 8)" if backbone == "small-cnn" else "")) from None


def _attach_log_file(run_dir: Path) -> None:
    log.setLevel(logging.INFO)
    for handler in list(log.handlers):
        if isinstance(handler, logging.FileHandler):
            log.removeHandler(handler)
            handler.close()
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8", errors="backslashreplace")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)


def train(cfg: Config, force: bool = False) -> RunSummary:
    """Train a new run as configured and evaluate its best-on-validation model on the test set. ``force``: the run
    folder may hold files that are not a run's."""
    run_dir = Path(cfg.train.out) if cfg.train.out else default_run_dir(cfg)
    if not force:
        refuse_foreign(run_dir)
    with locked_run_folder(run_dir):
        if (run_dir / "last.pt").exists():
            raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another "
                            f"--out")
        return _fit(cfg, run_dir, resume=False)


def resume(run_dir: Path, overrides: dict[str, Any] | None = None) -> RunSummary:
    """Continue an interrupted run from its last checkpoint, or extend a finished one (more ``--nst-rounds``); only
    the settings in RESUMABLE_SETTINGS may change."""
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "last.pt").is_file():
        raise UserError(f"{run_dir} is not a weakdml run directory with a checkpoint (config.yaml and last.pt)")
    cfg = build_config(run_dir / "config.yaml", overrides)
    changed = _changed_settings(build_config(run_dir / "config.yaml"), cfg, RESUMABLE_SETTINGS)
    if changed:
        raise UserError(f"cannot change {', '.join(changed)} when resuming; only {', '.join(RESUMABLE_SETTINGS)}")
    if overrides and "nst_rounds" in overrides and (cfg.train.method, cfg.nst.nst_variant) != ("mbdml4",
                                                                                             "teacher-student"):
        raise UserError(f"--nst-rounds adds teacher -> student rounds to an mbdml4 teacher-student run; {run_dir} "
                        f"is a {cfg.train.method} run" + (" (online variant)" if cfg.train.method == "mbdml4" else ""))
    with locked_run_folder(run_dir):
        return _fit(cfg, run_dir, resume=True)


def _changed_settings(saved: Config, given: Config, allowed: tuple[str, ...] | set[str]) -> list[str]:
    """Names of the settings outside ``allowed`` whose values differ between two configs."""
    stored = {name: value for section in saved.to_dict().values() for name, value in section.items()}
    return sorted(name for section in given.to_dict().values() for name, value in section.items()
                  if not same_setting(value, stored[name]) and name not in allowed)


def train_student(teacher_dir: Path, overrides: dict[str, Any]) -> RunSummary:
    """A new mbdml4 run whose teacher is ``teacher_dir``'s finished teacher: only the student's settings (the nst
    section, except the variant) may differ, so several students can be compared without training the teacher
    again. Its stage-0 rows, ``best-stage0.pt`` and split are copied; the run then trains, resumes and reports like
    any other."""
    if not (teacher_dir / "config.yaml").is_file():
        raise UserError(f"{teacher_dir} is not a weakdml run directory (no config.yaml)")
    saved = build_config(teacher_dir / "config.yaml")
    if saved.train.method != "mbdml4" or saved.nst.nst_variant != "teacher-student":
        raise UserError(f"{teacher_dir} is a {saved.train.method} run; --from-teacher needs an mbdml4 run with "
                        f"--nst-variant teacher-student")
    cfg = build_config(teacher_dir / "config.yaml", overrides)
    student = set(saved.to_dict()["nst"]) - {"nst_variant"}
    changed = _changed_settings(saved, cfg, student | {"out", "device", "progress", "eval_batch_size"})
    if changed:
        raise UserError(f"--from-teacher keeps the teacher's settings; {', '.join(changed)} cannot change (only the "
                        f"student's --nst-* settings, --scale-nst and --unlabeled-ratio can)")
    run_dir = Path(overrides["out"]) if overrides.get("out") else default_run_dir(cfg)
    if (run_dir / "last.pt").exists() or run_dir.resolve() == teacher_dir.resolve():
        raise UserError(f"{run_dir} already holds a run; choose another --out for the student")
    cfg.train.out = str(run_dir)
    refuse_foreign(run_dir)
    with locked_run_folder(run_dir):
        return _fit(cfg, run_dir, resume=False, teacher_dir=teacher_dir)


def _fit(cfg: Config, run_dir: Path, resume: bool, teacher_dir: Path | None = None) -> RunSummary:
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    split_file = run_dir / "split.json" if resume else teacher_dir / "split.json" if teacher_dir else None
    data = prepare_data(cfg, split_file)
    method = build_method(cfg, data, device)
    run_dir.mkdir(parents=True, exist_ok=True)
    _attach_log_file(run_dir)
    trainer = Trainer(cfg, method, data.val, data.test, run_dir)
    if resume:
        trainer.resume()
        if trainer.start_epoch < trainer.total_epochs:
            finished = run_dir / "final_metrics.json"
            if finished.is_file():  # a finished run given more epochs or rounds is unfinished again
                finished.replace(run_dir / f"final_metrics-{trainer.start_epoch}-epochs.json")
            log.info(f"resumed {run_dir} at epoch {trainer.start_epoch + 1}")
        else:
            log.info(f"{run_dir} has finished its {trainer.total_epochs} epochs; nothing to train (more epochs: "
                     f"--epochs, more noisy-student rounds: --nst-rounds)")
    elif teacher_dir:
        trainer.start_from_teacher(teacher_dir)
        log.info(f"student of {teacher_dir}'s teacher, from epoch {trainer.start_epoch + 1}, in {run_dir}")
    else:
        trainer.log.truncate_after(-1)  # rows of an earlier attempt that failed in its first epoch
        if len(data.val) == 0:
            log.warning(f"no validation images ({len(data.train.labeled)} labelled; --val-fraction "
                        f"{cfg.data.val_fraction}): the model kept is the last epoch's; label more images or raise "
                        f"--val-fraction to select on validation")
        log.info(f"training {cfg.train.method} on {cfg.data.dataset}: {len(data.train.labeled)} labelled, "
                 f"{len(data.val)} validation, {len(data.train.unlabeled)} unlabelled, {len(data.test)} test; "
                 f"device {device}; run directory {run_dir}")
    cfg.save(run_dir / "config.yaml")  # after the checks of a resumed run: a refused one keeps its settings
    data.split.save(run_dir / "split.json")
    trainer.fit()
    metrics = final_metrics(method, data, run_dir)
    metrics["train_seconds"] = sum(row["seconds"] for row in trainer.log.rows())  # over every session of the run
    write_json_atomic(run_dir / "final_metrics.json", metrics)
    log.info(f"test accuracy {metrics['test_accuracy']:.4f} (best validation epoch {metrics['best_epoch'] + 1})")
    return RunSummary(run_dir, metrics)


def final_metrics(method: Method, data: PreparedData, run_dir: Path) -> dict[str, Any]:
    """Test metrics of the best-on-validation model: the method's accuracy, then embedding metrics of the test set
    against the labelled training images (kNN accuracy, Recall@K, MAP@R, clustering)."""
    best = load_checkpoint(run_dir / "best.pt", map_location=method.device)
    load_weights(method, best["method"], run_dir / "best.pt")
    val, test = evaluate_accuracy(method, data.val, data.test)
    test_emb = method.embed_all(data.test.images).cpu()
    ref_emb = method.embed_all(data.train.labeled.images).cpu()
    embedding = evaluate_embeddings(test_emb, data.test.labels, ref_emb, data.train.labeled.labels,
                                    seed=method.cfg.train.seed)
    return {"test_accuracy": test.accuracy, "test_loss": test.loss, "val_accuracy": val.accuracy,
            "best_epoch": int(best["epoch"]), **{f"test_{k}": v for k, v in embedding.items()}}


def load_run(run_dir: Path, device: str = "auto", data_root: str | None = None) -> tuple[Config, PreparedData, Method]:
    """Rebuild a run's data, split and method from its directory (for evaluation and plots)."""
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "best.pt").is_file():
        raise UserError(f"{run_dir} is not a weakdml run directory with a trained model (config.yaml and best.pt)")
    cfg = build_config(run_dir / "config.yaml", {"device": device, "data_root": data_root})
    data = prepare_data(cfg, run_dir / "split.json")
    method = build_method(cfg, data, resolve_device(cfg.train.device))
    return cfg, data, method


def evaluate_run(run_dir: Path, device: str = "auto", data_root: str | None = None) -> dict[str, Any]:
    """Recompute the test metrics of a run from its saved best model."""
    _, data, method = load_run(run_dir, device, data_root)
    return final_metrics(method, data, run_dir)
