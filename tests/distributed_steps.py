"""One training step of a method on digits, as the trainer takes it, in one process or as one of several (gloo):
the helpers of tests/test_distributed.py (not a test module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist

from weakdml.config import build_config
from weakdml.data.prepare import prepare_data
from weakdml.engine import dist
from weakdml.engine.stages import build_method
from weakdml.engine.trainer import distributed, load_batch, rank_loss
from weakdml.errors import UserError
from weakdml.methods import METHODS
from weakdml.methods.noisy_student import NoisyStudent
from weakdml.methods.online_noisy_student import OnlineNoisyStudent
from weakdml.methods.spice_self import SpiceSelf

# (method, settings): BatchNorm keeps its statistics (eval), so that a process's rows are normalised as the whole
# batch is; batch sizes that do not split evenly check the weighting of uneven shares
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "nngk": ("nngk", {"batch_size": 31}),
    "mbdml3": ("mbdml3", {"batch_size": 31}),
    "mixup": ("mixup", {"batch_size": 30}),
    "ms+iaa": ("ms", {"batch_size": 32, "m_per_class": 4, "iaa": True, "iaa_start_epoch": 0}),
    "triplet": ("triplet", {"batch_size": 30, "m_per_class": 5, "triplet_miner": "all"}),
    "moco": ("moco", {"batch_size": 30, "embedding_dim": 0, "labeled_fraction": 0.5, "shuffle_groups": 4}),
    "spice-self": ("spice-self", {"batch_size": 61, "embedding_dim": 0, "labeled_fraction": 0}),
    "spice-semi": ("spice", {"embedding_dim": 0, "labeled_fraction": 0, "spice_semi_batch": 7, "fixmatch_ratio": 2,
                             "fixmatch_threshold": 0.0}),
    # the labelled rows split 16/15, the pseudo-labelled ones 31/31: the two means need their own weights
    "noisy-student": ("noisy-student", {"batch_size": 31, "unlabeled_ratio": 2}),
    # the kept images are a selection of the unlabelled rows, thresholded by the whole labelled batch's confidence
    "online-noisy-student": ("online-noisy-student", {"batch_size": 31, "unlabeled_ratio": 2, "nst_variant": "online",
                                                      "nst_start": 0, "c_tau": 0.3}),
}
CLASSES = {**METHODS, "spice-self": SpiceSelf, "noisy-student": NoisyStudent,
           "online-noisy-student": OnlineNoisyStudent}
CONFIG_NAMES = {"noisy-student": "mbdml4", "online-noisy-student": "mbdml4"}


def inputs(method_name: str, unlabeled: int) -> dict[str, Any]:
    """What a stage reads: SPICE-Semi's reliable samples (every fifth image, labelled by its position); a Noisy
    Student's pseudo-labels (soft targets for every unlabelled image, every other image kept)."""
    if method_name == "noisy-student":
        targets = torch.randn(unlabeled, 10, generator=torch.Generator().manual_seed(1)).softmax(1)
        return {"pseudo": {"targets": targets, "mask": torch.arange(unlabeled) % 2 == 0}}
    if method_name != "spice":
        return {}
    indices = torch.arange(0, unlabeled, 5)
    return {"reliable": {"indices": indices, "labels": indices % 10}}


def one_step(case: str) -> dict[str, torch.Tensor]:
    """The loss of the first batch of epoch 0 (its global value) and every parameter's gradient after the backward
    pass (DDP-averaged with several processes)."""
    method_name, settings = CASES[case]
    cfg = build_config(overrides={"method": CONFIG_NAMES.get(method_name, method_name), "dataset": "digits",
                                  "batchnorm": "eval", "seed": 0, "device": "cpu", "augment": "weak", **settings})
    method_class = CLASSES[method_name]
    data = prepare_data(cfg, None, method_class.needs_labels)
    method = build_method(cfg, method_class, data, torch.device("cpu"),
                          **inputs(method_name, len(data.train.unlabeled)))
    method.train()
    method.seed_epoch(0)
    method.on_epoch_start(0)
    batch = load_batch(method, next(iter(method.batches(0))))
    network = distributed(method, cfg)
    losses = network(batch)
    rank_loss(losses["loss"], batch).backward()
    out = {"loss": dist.all_sum(losses["loss"].detach() * batch.share)}
    for name, parameter in method.named_parameters():
        if parameter.requires_grad:
            out[name] = torch.zeros_like(parameter) if parameter.grad is None else parameter.grad.clone()
    return out


def computed_once_seen() -> list[tuple[list[int], Any, tuple[str, str]]]:
    """What each rank saw of ``dist.computed_once``: the ranks that ran a computation, the value it got, and the
    error it raised when rank 0's computation failed (gathered from every rank, in rank order)."""
    ran: list[int] = []
    value = dist.computed_once(lambda: ran.append(dist.rank()) or {"from": dist.rank()})

    def fails() -> None:
        raise UserError("no file named x.csv")
    try:
        dist.computed_once(fails)
        raised = ("", "")
    except UserError as error:
        raised = (type(error).__name__, str(error))
    seen: list[Any] = [None] * dist.world_size()
    torch_dist.all_gather_object(seen, (ran, value, raised))
    return seen


def worker(rank: int, world: int, init_file: str, out: str) -> None:
    """Every case in one process of ``world`` (gloo); rank 0 saves the results to ``out``."""
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    finished = False
    try:
        results: dict[str, Any] = {case: one_step(case) for case in CASES}
        results["computed_once"] = computed_once_seen()
        if rank == 0:
            torch.save(results, Path(out))
        finished = True
    finally:
        dist.stop(together=finished)
