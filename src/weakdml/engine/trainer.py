"""The training loop of one trained stage: it calls the method's hooks and knows nothing of which method it runs.

Per epoch: ``on_epoch_start``, the method's index batches (drawn first, so that loading ahead cannot disturb the
seeded draws), their images loaded ahead and sharded per rank, the method called through ``forward`` (AMP on CUDA),
the learning rate of the schedule set at every step; then every ``--eval-every`` epochs (and at the last) the task's
validation and test metrics (test is recorded for the curves, never used to choose), a metrics row, and checkpoints:
``last.pt`` every epoch and ``best.pt`` when the monitor improves. Loss sums stay on the device and are read once
per logging interval, where a non-finite loss stops training and keeps the last good checkpoint.

With several processes (torchrun) the method runs inside DistributedDataParallel: every process draws the same index
batches and trains on its rows of each; its loss is weighted by its share of the batch's images (times the number of
processes, which DDP's gradient average divides out), so a loss that averages over the process's images adds up to
the global batch's mean, and one computed on gathered embeddings (the same on every process) to itself. BatchNorm
running statistics are averaged over the processes after each epoch; rank 0 alone writes.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from weakdml.config import Config, snapshot_images
from weakdml.data.loader import Loaded, load_batches
from weakdml.data.prepare import PreparedData
from weakdml.data.sources import all_images, view
from weakdml.engine import dist
from weakdml.engine.checkpoint import load_checkpoint, load_weights, save_atomic
from weakdml.engine.environment import rng_state, set_rng_state
from weakdml.engine.metrics_log import MetricsLog
from weakdml.engine.monitor import Monitor
from weakdml.engine.optim import build_optimizer, set_learning_rate
from weakdml.engine.tasks import Task
from weakdml.errors import UserError
from weakdml.methods.base import Batch, Method
from weakdml.transfer import to_device

log = logging.getLogger("weakdml")
LOG_EVERY = 25  # steps between reads of the loss from the device


class Trainer:
    """Trains ``method`` for ``epochs`` epochs numbered from ``first_epoch`` (epochs are numbered across a
    pipeline's stages; ``stage`` is this stage's ordinal among them), writing into ``directory``."""

    def __init__(self, cfg: Config, method: Method, task: Task, monitor: Monitor, data: PreparedData,
                 directory: Path, log_: MetricsLog, epochs: int, first_epoch: int = 0, stage: int = 0) -> None:
        self.cfg, self.method, self.task, self.monitor, self.data = cfg, method, task, monitor, data
        self.directory, self.log, self.epochs = directory, log_, epochs
        self.first_epoch, self.stage = first_epoch, stage
        self.optimizer = build_optimizer(method.parameter_groups(), cfg.optim)
        self.start_epoch = first_epoch
        self.best: float | None = None
        self.amp_dtype = amp_dtype(cfg.train.amp, method.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.network = distributed(method, cfg)  # what a step calls: the method, or its DDP wrapper

    @property
    def end_epoch(self) -> int:
        return self.first_epoch + self.epochs

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict:
        return {"epoch": epoch, "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "best": self.best, "monitor": self.monitor.metric,
                "rng": rng_state(self.method.device)}

    def resume(self) -> None:
        """Continue from ``last.pt``: model, method state (banks), optimiser, RNG, epoch; the learning rate follows
        from the epoch (a run given more --epochs goes on along its longer schedule)."""
        path = self.directory / "last.pt"
        state = load_checkpoint(path)  # on the CPU: RNG states must stay there
        if "best" not in state and "best_val_accuracy" in state:  # a one-stage run of weakdml 0.1
            state["best"] = None if state["best_val_accuracy"] == -math.inf else state["best_val_accuracy"]
        missing = {"epoch", "method", "optimizer", "scaler", "best", "rng"} - set(state)
        if missing:
            raise UserError(f"{path} was written by an earlier version of weakdml (it lacks "
                            f"{', '.join(sorted(missing))}) and cannot be resumed; start a new run, or evaluate it "
                            f"with the version that made it")
        trained = state["epoch"] + 1
        if trained > self.end_epoch:
            raise UserError(f"this run has trained {trained - self.first_epoch} epochs: --epochs cannot be fewer")
        load_weights(self.method, state["method"], path)
        declared = [(group["name"], group["lr_factor"]) for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, (name, factor) in zip(self.optimizer.param_groups, declared):  # the method's, not the file's
            group["name"], group["lr_factor"] = name, factor
        if state["scaler"]:  # empty when saved without loss scaling (CPU, bf16, --amp off): a fresh scale then
            self.scaler.load_state_dict(state["scaler"])
        self.best = state["best"]
        set_rng_state(state["rng"], self.method.device)
        self.start_epoch = trained
        self.log.truncate_after(state["epoch"])

    def start(self) -> None:
        """A fresh start: rows a failed earlier attempt left from this stage on are dropped."""
        self.log.truncate_after(self.first_epoch - 1)

    # -- loop ----------------------------------------------------------------------------------------------------
    def fit(self) -> None:
        quiet = {"auto": not sys.stderr.isatty(), "on": False, "off": True}[self.cfg.train.progress] or \
            not dist.is_main()
        for epoch in range(self.start_epoch, self.end_epoch):
            started = time.perf_counter()
            train_stats, lr = self._train_epoch(epoch, quiet)
            local = epoch - self.first_epoch
            evaluated = (local + 1) % self.cfg.train.eval_every == 0 or epoch == self.end_epoch - 1
            metrics = self.task.epoch_metrics(self.method, self.data) if evaluated else {}
            row = {"epoch": epoch, "stage": self.stage, **{f"train_{k}": v for k, v in train_stats.items()},
                   **metrics, "lr": lr, "seconds": time.perf_counter() - started}
            candidate = evaluated or not self.monitor.needs_evaluation
            value = self.monitor.value(row) if candidate else None
            improved = candidate and self.monitor.improves(value, self.best)
            if improved:
                self.best = value
            self.log.append(row | {"best": improved})  # by rank 0
            if dist.is_main():
                state = self._state(epoch)
                if improved:
                    save_atomic({"epoch": epoch, "method": state["method"], "value": value,
                                 "monitor": self.monitor.metric}, self.directory / "best.pt")
                save_atomic(state, self.directory / "last.pt")  # last: a crash before it repeats the whole epoch
            if evaluated:
                self._snapshot(epoch)
            shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if not k.endswith("loss"))
            log.info(f"{self._epoch_name(epoch)}  loss {train_stats['loss']:.4f}  {shown}  "
                     f"({row['seconds']:.1f} s)")

    def _epoch_name(self, epoch: int) -> str:
        """``epoch 71/100``, numbered across the pipeline's stages, and in a later stage also its own count."""
        name = f"epoch {epoch + 1}/{self.end_epoch}"
        return name + f" (this stage: {epoch - self.first_epoch + 1}/{self.epochs})" if self.first_epoch else name

    def _snapshot(self, epoch: int) -> None:
        """Embeddings of the first ``snapshot_images`` test images, for plots of the embedding over epochs (every
        process embeds its share; rank 0 writes)."""
        n = min(snapshot_images(self.cfg), len(self.data.test))
        if n == 0:
            return
        first = all_images(view(self.data.test, torch.arange(n)))
        embeddings = self.method.embed_all(first).cpu().numpy()
        if not dist.is_main():
            return
        folder = self.directory / "snapshots"
        folder.mkdir(exist_ok=True)
        np.savez_compressed(folder / f"epoch_{epoch:04d}.npz", embeddings=embeddings,
                            labels=self.data.test.labels[:n].numpy())

    def _train_epoch(self, epoch: int, quiet: bool) -> tuple[dict[str, float], float]:
        method, local = self.method, epoch - self.first_epoch
        method.train()
        method.seed_epoch(epoch)
        method.on_epoch_start(epoch)
        plan = list(method.batches(epoch))
        totals: dict[str, torch.Tensor] = {}
        seen, lr = 0, self.cfg.optim.lr
        first_bad = torch.tensor([math.nan, -1.0], device=method.device)  # the first non-finite loss and its step
        bar = tqdm(zip(plan, self._loaded(plan)), total=len(plan), desc=self._epoch_name(epoch),
                   leave=False, disable=quiet, unit="batch")
        for step, (batch, (labeled, unlabeled)) in enumerate(bar):
            fill(method, batch, labeled, unlabeled)
            lr = set_learning_rate(self.optimizer, self.cfg.optim, local, step, len(plan), self.epochs)
            with torch.autocast(method.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                losses = self.network(batch)
            loss = rank_loss(losses["loss"], batch)
            bad = ~torch.isfinite(loss.detach()) & (first_bad[1] < 0)
            here = torch.stack([loss.detach().float(), torch.full((), float(step), device=loss.device)])  # no copy
            first_bad = torch.where(bad, here, first_bad)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            n = len(batch.index) or len(batch.unlabeled_index)  # label-free methods train on unlabelled batches
            seen += n
            for key, value in losses.items():
                totals[key] = totals.get(key, 0) + value.detach().float().to(method.device) * n
            if (step + 1) % LOG_EVERY == 0 or step == len(plan) - 1:
                self._check_finite(first_bad, epoch)
                bar.set_postfix(loss=f"{loss.item():.4f}")
        dist.average_batchnorm(method)
        names = list(totals)
        count = torch.tensor(float(seen), device=method.device)
        summed = dist.all_sum(torch.stack([*(totals[k] for k in names), count]))
        values, seen = summed[:-1].tolist(), float(summed[-1])
        return {k: v / max(seen, 1) for k, v in zip(names, values)}, lr

    def _loaded(self, plan: list[Batch]) -> Iterator[tuple[Loaded, Loaded | None]]:
        """This rank's share of each batch's labelled (and unlabelled) images, loaded ahead by ``--workers``
        processes (0: a background thread)."""
        train, device, workers = self.method.data, self.method.device, self.cfg.data.workers
        labeled = load_batches(train.labeled, [dist.shard(b.index) for b in plan], workers, device=device)
        shares = [dist.shard(b.unlabeled_index) for b in plan if b.unlabeled_index is not None]
        unlabeled = load_batches(train.unlabeled, shares, workers, device=device) if shares else iter(())
        for batch in plan:
            yield next(labeled), None if batch.unlabeled_index is None else next(unlabeled)

    def _check_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        """What a non-finite loss stopped, what was kept, and the settings that plausibly caused it."""
        value, step = first_bad.tolist()
        if step < 0:
            return
        last = self.directory / "last.pt"
        kept = f"its checkpoint after epoch {epoch} is kept in {last}" if last.is_file() else \
            "no checkpoint had been written yet"
        flags = " or ".join(("a lower --lr", *(f"another {flag}" for flag in self.method.loss_settings)))
        raise UserError(f"the loss became {value} at epoch {epoch + 1}, step {int(step) + 1}; training stopped and "
                        f"{kept}; start a new run with {flags}")


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` on ``device`` (None: float32). On a GPU, auto is bfloat16 where the GPU has
    it (compute capability 8 and above: checked on ``device``, which need not be the current GPU), else float16; on
    the CPU only an explicit bf16 turns autocast on."""
    if amp == "off" or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cpu":
        return torch.bfloat16 if amp == "bf16" else None
    has_bf16 = torch.cuda.get_device_capability(device)[0] >= 8
    if amp == "auto":
        return torch.bfloat16 if has_bf16 else torch.float16
    if amp == "bf16" and not has_bf16:
        raise UserError("--amp bf16: this GPU does not support bfloat16; use --amp fp16")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def rank_loss(loss: torch.Tensor, batch: Batch) -> torch.Tensor:
    """What this process back-propagates of a method's loss on its rows: the loss weighted by its share of the
    batch times the number of processes (DDP averages the gradients), so that the processes' gradients add up to
    the single-process gradient of the global batch; the loss itself with one process."""
    return loss if dist.world_size() == 1 else loss * (dist.world_size() * batch.share)


def distributed(method: Method, cfg: Config) -> torch.nn.Module:
    """The method as a step calls it: itself, or with several processes wrapped in DistributedDataParallel (buffers
    such as banks and queues are kept alike by the methods themselves, so DDP does not broadcast them at every
    step; a method may leave parameters unused in a step, e.g. before IAA starts)."""
    if dist.world_size() == 1:
        if cfg.train.sync_batchnorm:
            log.warning("--sync-batchnorm has no effect in a single process")
        return method
    if cfg.train.sync_batchnorm:
        if method.shuffles_batchnorm:
            raise UserError("--sync-batchnorm would pool BatchNorm statistics over the processes, which this method's "
                            "shuffle-BN exists to prevent (its key encoder must not see its batch's statistics); leave "
                            "it out")
        if method.device.type != "cuda":
            raise UserError("--sync-batchnorm needs GPUs (torch's SyncBatchNorm runs on CUDA only); leave it out on "
                            "the CPU")
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    return torch.nn.parallel.DistributedDataParallel(method, forward_sync_buffers=False, find_unused_parameters=True)


def fill(method: Method, batch: Batch, labeled: Loaded, unlabeled: Loaded | None) -> Batch:
    """Put this process's rows of an index batch's labelled and unlabelled parts, loaded as (indices, images), into
    it, with the labels; the index batch as drawn stays in ``all_index`` (``all_unlabeled_index``)."""
    device, train = method.device, method.data
    if batch.all_index is None:
        batch.all_index, batch.all_unlabeled_index = batch.index, batch.unlabeled_index
    (index, batch.images), batch.labels = labeled, to_device(train.labeled.labels[labeled[0]], device)
    batch.index = to_device(index, device)
    if unlabeled is not None:
        batch.unlabeled_index, batch.unlabeled_images = to_device(unlabeled[0], device), unlabeled[1]
    return batch


def load_batch(method: Method, batch: Batch) -> Batch:
    """The images and labels of this rank's share of one index batch, on the method's device (no loading ahead)."""
    train, device = method.data, method.device
    index = dist.shard(batch.index)
    unlabeled = None
    if batch.unlabeled_index is not None:
        u_index = dist.shard(batch.unlabeled_index)
        unlabeled = (u_index, train.unlabeled.load(u_index).to(device))
    return fill(method, batch, (index, train.labeled.load(index).to(device)), unlabeled)
