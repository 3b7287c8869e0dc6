"""The training loop: it calls the method's hooks and knows nothing of which method it runs.

Per epoch: ``on_epoch_start``, the method's batches through ``training_step`` (AMP on CUDA), optimiser and schedule
steps, then accuracy on the validation and test parts (test is recorded for the curves, never used to choose), a
metrics row, and checkpoints: ``last.pt`` every epoch and ``best.pt`` at the best validation accuracy (a tie goes to
the later epoch: small validation sets saturate early, and later epochs are more converged). A non-finite loss stops
training and keeps the last good checkpoint.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from weakdml.config import Config, snapshot_images
from weakdml.data.types import ImageSet
from weakdml.engine.checkpoint import load_checkpoint, save_atomic
from weakdml.engine.environment import rng_state, set_rng_state
from weakdml.engine.metrics_log import MetricsLog
from weakdml.engine.optim import build_optimizer, build_scheduler
from weakdml.errors import UserError
from weakdml.methods.base import Method

log = logging.getLogger("weakdml")


@dataclass
class EvalResult:
    accuracy: float
    loss: float


NOT_EVALUATED = EvalResult(math.nan, math.nan)  # the metrics of an epoch that --eval-every skips


@torch.no_grad()
def evaluate_accuracy(method: Method, *parts: ImageSet) -> list[EvalResult]:
    """Accuracy and mean NLL of the method's classifier on each labelled image set, from one prediction call (so a
    method that embeds its support set before predicting does it once)."""
    sizes = [len(part) for part in parts]
    if sum(sizes) == 0:
        return [EvalResult(math.nan, math.nan) for _ in parts]
    scores = method.predict_all(torch.cat([part.images for part in parts])).split(sizes)
    results = []
    for part, part_scores in zip(parts, scores):
        if len(part) == 0:
            results.append(EvalResult(math.nan, math.nan))
            continue
        labels = part.labels.to(part_scores.device)
        results.append(EvalResult((part_scores.argmax(1) == labels).float().mean().item(),
                                  F.cross_entropy(part_scores, labels).item()))
    return results


class Trainer:
    """Runs a method's stages (one for most methods; teacher then students for Noisy Student) epoch by epoch.

    Epochs are numbered across stages. A stage after the first starts from the previous stage's best-on-validation
    weights (``best-stage{s}.pt``), calls the method's ``begin_stage`` and gets a fresh optimiser and schedule.
    ``best.pt`` is the best validation accuracy over all stages.
    """

    def __init__(self, cfg: Config, method: Method, val: ImageSet, test: ImageSet, run_dir: Path) -> None:
        self.cfg, self.method, self.val, self.test, self.run_dir = cfg, method, val, test, run_dir
        self.stage_starts = [0]
        for length in method.stages():
            self.stage_starts.append(self.stage_starts[-1] + length)
        self.total_epochs = self.stage_starts[-1]
        self._new_optimizer(stage=0)
        self.log = MetricsLog(run_dir)
        self.start_epoch = 0
        self.best = -math.inf  # validation accuracy, over all stages
        self.stage_best = -math.inf  # validation accuracy within the current stage
        device = method.device
        self.amp_dtype = None
        if cfg.train.amp and device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    @property
    def multi_stage(self) -> bool:
        return len(self.stage_starts) > 2

    def stage_of(self, epoch: int) -> int:
        return max(s for s in range(len(self.stage_starts) - 1) if self.stage_starts[s] <= epoch)

    def _new_optimizer(self, stage: int) -> None:
        length = self.stage_starts[stage + 1] - self.stage_starts[stage]
        self.optimizer = build_optimizer(self.method, self.cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, self.cfg.optim, length)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict:
        return {"epoch": epoch, "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "best_val_accuracy": self.best, "stage_best_val_accuracy": self.stage_best, "rng": rng_state(),
                "stage_starts": self.stage_starts}

    def resume(self) -> None:
        """Continue from ``last.pt``: model, method state (banks, pseudo-labels), optimiser, schedule, RNG, epoch."""
        state = load_checkpoint(self.run_dir / "last.pt")  # on the CPU: RNG states must stay there
        missing = {"epoch", "method", "optimizer", "scheduler", "scaler", "best_val_accuracy",
                   "stage_best_val_accuracy", "rng"} - set(state)
        if missing:
            raise UserError(f"{self.run_dir / 'last.pt'} lacks {', '.join(sorted(missing))}: it was written by "
                            f"another version of weakdml and cannot be resumed; start a new run")
        saved_stages = state.get("stage_starts", self.stage_starts)
        self._check_stages(saved_stages, trained=state["epoch"] + 1)
        if len(saved_stages) == 2 and self.multi_stage and not (self.run_dir / "best-stage0.pt").is_file():
            save_atomic(load_checkpoint(self.run_dir / "best.pt"), self.run_dir / "best-stage0.pt")  # had one stage
        self.method.load_state_dict(state["method"])
        self._new_optimizer(self.stage_of(state["epoch"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if isinstance(self.scheduler, torch.optim.lr_scheduler.LambdaLR):
            # the saved lr follows the saved length; a run given more --epochs goes on along its longer schedule
            schedule = zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas)
            for group, base, factor in schedule:
                group["lr"] = base * factor(self.scheduler.last_epoch)
        self.scaler.load_state_dict(state["scaler"])
        self.best = state["best_val_accuracy"]
        self.stage_best = state["stage_best_val_accuracy"]
        set_rng_state(state["rng"])
        self.start_epoch = state["epoch"] + 1
        self.log.truncate_after(state["epoch"])

    def _check_stages(self, saved: list[int], trained: int) -> None:
        """A resumed run keeps its stages (``saved``: their starts and the last one's end) and the ``trained`` epochs;
        the last stage's end may move (``--epochs`` of a one-stage run) and stages may follow it (``--nst-rounds``)."""
        now, kept = self.stage_starts, len(saved) - 1
        added = len(now) > len(saved)
        if len(now) == len(saved) == 2 and now[-1] < trained:
            raise UserError(f"this run has trained {trained} epochs: --epochs cannot be fewer")
        if (len(now) < len(saved) or saved[:-1] != now[:kept] or (added and saved[-1] != now[kept])
                or now[-1] < trained):
            raise UserError(f"cannot resume this run with stages starting at epochs {now[:-1]} and ending at "
                            f"{now[-1]}: it has {saved[:-1]}, ending at {saved[-1]}, and has trained {trained} "
                            f"epochs; only --nst-rounds may grow, and --epochs of a one-stage run")

    def start_from_teacher(self, teacher_dir: Path) -> None:
        """Begin at the first student epoch with another run's finished teacher (its stage 0: metrics rows and
        ``best-stage0.pt``) as this run's, so that student settings can be compared on one teacher."""
        teacher_epochs = self.stage_starts[1]
        rows = [row for row in MetricsLog(teacher_dir, tensorboard=False).rows() if row["stage"] == 0]
        if len(rows) < teacher_epochs or not (teacher_dir / "best-stage0.pt").is_file():
            raise UserError(f"the teacher of {teacher_dir} has finished {len(rows)} of its {teacher_epochs} epochs; "
                            f"resume that run first (weakdml train --resume {teacher_dir})")
        self.log.truncate_after(-1)
        for row in rows:
            self.log.append(row)
        teacher = load_checkpoint(teacher_dir / "best-stage0.pt")
        save_atomic(teacher, self.run_dir / "best-stage0.pt")
        save_atomic(teacher, self.run_dir / "best.pt")
        evaluated = [row["val_accuracy"] for row in rows if not math.isnan(row["val_accuracy"])]  # --eval-every
        self.best = self.stage_best = max(evaluated, default=math.nan)
        self.start_epoch = teacher_epochs

    def _begin_stage(self, stage: int) -> None:
        teacher = load_checkpoint(self.run_dir / f"best-stage{stage - 1}.pt", map_location=self.method.device)
        self.method.load_state_dict(teacher["method"])
        self.method.begin_stage(stage)
        self._new_optimizer(stage)
        self.stage_best = -math.inf

    # -- loop ----------------------------------------------------------------------------------------------------
    def fit(self) -> None:
        quiet = {"auto": not sys.stderr.isatty(), "on": False, "off": True}[self.cfg.train.progress]
        for epoch in range(self.start_epoch, self.total_epochs):
            stage = self.stage_of(epoch)
            if stage > 0 and epoch == self.stage_starts[stage]:
                self._begin_stage(stage)
            started = time.perf_counter()
            train_stats = self._train_epoch(epoch, quiet)
            evaluated = self.evaluates(epoch)
            val, test = evaluate_accuracy(self.method, self.val, self.test) if evaluated else [NOT_EVALUATED] * 2
            row = {"epoch": epoch, "stage": stage, **{f"train_{k}": v for k, v in train_stats.items()},
                   "val_accuracy": val.accuracy, "val_loss": val.loss, "test_accuracy": test.accuracy,
                   "lr": self.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
            self.scheduler.step()
            improved = evaluated and (val.accuracy >= self.best or math.isnan(val.accuracy))
            stage_improved = evaluated and (val.accuracy >= self.stage_best or math.isnan(val.accuracy))
            self.best = val.accuracy if improved else self.best
            self.stage_best = val.accuracy if stage_improved else self.stage_best
            state = self._state(epoch)
            best_state = {"epoch": epoch, "method": state["method"]}
            if improved:
                save_atomic(best_state, self.run_dir / "best.pt")
            if stage_improved and self.multi_stage:
                save_atomic(best_state, self.run_dir / f"best-stage{stage}.pt")
            self.log.append(row | {"best": improved})
            save_atomic(state, self.run_dir / "last.pt")  # last: a crash before it repeats the whole epoch
            if evaluated:
                self._snapshot(epoch)
            log.info(f"epoch {epoch + 1}/{self.total_epochs}  loss {train_stats['loss']:.4f}  "
                     f"val {val.accuracy:.4f}  test {test.accuracy:.4f}  ({row['seconds']:.1f} s)")

    def evaluates(self, epoch: int) -> bool:
        """Validation and test are evaluated every ``eval_every`` epochs and at the end of each stage."""
        return (epoch + 1) % self.cfg.train.eval_every == 0 or epoch + 1 in self.stage_starts[1:]

    def _snapshot(self, epoch: int) -> None:
        """Embeddings of the first ``snapshot_images`` test images, for plots of the embedding over epochs."""
        n = min(snapshot_images(self.cfg), len(self.test))
        if n == 0:
            return
        folder = self.run_dir / "snapshots"
        folder.mkdir(exist_ok=True)
        embeddings = self.method.embed_all(self.test.images[:n]).cpu().numpy()
        np.savez_compressed(folder / f"epoch_{epoch:04d}.npz", embeddings=embeddings,
                            labels=self.test.labels[:n].numpy())

    def _train_epoch(self, epoch: int, quiet: bool) -> dict[str, float]:
        method = self.method
        method.train()
        method.seed_epoch(epoch)
        method.on_epoch_start(epoch)
        totals: dict[str, float] = {}
        seen = 0
        bar = tqdm(method.batches(epoch), desc=f"epoch {epoch + 1}/{self.total_epochs}", leave=False,
                   disable=quiet, unit="batch")
        for step, batch in enumerate(bar):
            with torch.autocast(method.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                losses = method.training_step(batch)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise UserError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; training "
                                f"stopped and the last good checkpoint is kept in {self.run_dir} (try a lower --lr)")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            n = len(batch.labels)
            seen += n
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) * n
            bar.set_postfix(loss=f"{loss.item():.4f}")
        return {key: value / max(seen, 1) for key, value in totals.items()}
