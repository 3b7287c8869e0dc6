"""The optimiser, built from the parameter groups a method declares (each with its own learning-rate factor and
weight decay), and the per-step learning rate of the schedule (engine/schedule.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from weakdml.config import OptimConfig
from weakdml.engine.schedule import lr_factor
from weakdml.errors import UserError


@dataclass
class ParamGroup:
    """Parameters trained together: ``lr_factor`` × ``--lr`` and, when given, their own weight decay (else
    ``--weight-decay``). E.g. the embedding layer at 10× the backbone's rate, or only the heads of a frozen network."""

    name: str
    params: list[nn.Parameter] = field(default_factory=list)
    lr_factor: float = 1.0
    weight_decay: float | None = None


def build_optimizer(groups: list[ParamGroup], cfg: OptimConfig) -> torch.optim.Optimizer:
    trainable = [(g, [p for p in g.params if p.requires_grad]) for g in groups]
    param_groups = [{"params": params, "name": g.name, "lr_factor": g.lr_factor, "lr": cfg.lr * g.lr_factor,
                     "weight_decay": cfg.weight_decay if g.weight_decay is None else g.weight_decay}
                    for g, params in trainable if params]
    if not param_groups:
        raise UserError("this method has no trainable parameters (every parameter group is empty or frozen)")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    optimizer = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer(param_groups, lr=cfg.lr)


def set_learning_rate(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epoch: int, step: int, steps: int,
                      epochs: int) -> float:
    """Set every group's rate for ``step`` of the ``steps`` of ``epoch`` in a stage of ``epochs``; returns the base
    rate (``--lr`` × the schedule's factor)."""
    factor = lr_factor(epoch, step, steps, epochs, cfg)
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * group["lr_factor"] * factor
    return cfg.lr * factor
