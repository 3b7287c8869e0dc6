"""Learning-rate schedules as pure functions of the position in training, so that a checkpoint needs no scheduler
state: the epoch and the step within it say everything.

The factor multiplies each parameter group's base rate (``--lr`` × the group's own factor). ``--schedule-unit epoch``
holds the rate for a whole epoch (as most DML code does); ``step`` changes it at every step (MoCo, FixMatch). A linear
warm-up over ``--warmup-epochs`` comes first (its first epoch or step already trains, at 1/W of the rate); the cosine
or the milestones then run over the rest.
"""

from __future__ import annotations

import bisect
import math

from weakdml.config import OptimConfig


def lr_factor(epoch: int, step: int, steps: int, epochs: int, cfg: OptimConfig) -> float:
    """The factor at ``step`` (0-based) of the ``steps`` of ``epoch`` (0-based) in a stage of ``epochs`` epochs."""
    if cfg.schedule_unit == "epoch":  # progress in epochs, and how far it moves at once
        progress, unit = float(epoch), 1.0
    else:
        progress, unit = epoch + step / max(steps, 1), 1 / max(steps, 1)
    warmup = cfg.warmup_epochs
    if progress < warmup:
        return min(1.0, (progress + unit) / warmup)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min((progress - warmup) / max(epochs - warmup, unit), 1.0)))
    if cfg.schedule == "step":
        return cfg.gamma ** bisect.bisect_right(sorted(cfg.milestones), progress)
    return 1.0
