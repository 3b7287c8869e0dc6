"""What ``best.pt`` follows: a metric of the epoch's row and whether higher or lower is better.

``val_accuracy`` (classification), ``val_recall@1`` (retrieval), a training loss (label-free methods: ``train_loss``
with mode min) or ``last`` (every epoch replaces the one before). Test metrics are recorded for curves and are never
a monitor. When the metric is NaN (no validation images) the later epoch wins, so the model kept is the last one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from weakdml.errors import UserError


@dataclass(frozen=True)
class Monitor:
    metric: str  # a key of the epoch's metrics row, or "last"
    mode: str = "max"  # "max" or "min"

    @classmethod
    def parse(cls, text: str) -> Monitor:
        """'val_accuracy', 'train_loss:min', 'last'; test metrics are refused."""
        metric, _, mode = text.partition(":")
        mode = mode or ("min" if metric.endswith("loss") else "max")
        if mode not in ("min", "max") or not metric:
            raise UserError(f"--monitor {text!r}: give a metric and optionally :min or :max (e.g. val_accuracy, "
                            f"train_loss:min, last)")
        if metric.startswith("test_"):
            raise UserError(f"--monitor {metric}: test metrics never choose the model; monitor a validation or "
                            f"training metric")
        return cls(metric, mode)

    @property
    def needs_evaluation(self) -> bool:
        """Whether the metric exists only in epochs that evaluated the validation set."""
        return self.metric.startswith("val_")

    def value(self, row: dict) -> float:
        if self.metric == "last":
            return float(row["epoch"])
        if self.metric not in row:
            raise UserError(f"--monitor {self.metric}: the epochs record no such metric; they record "
                            f"{', '.join(k for k in row if k.startswith(('val_', 'train_')))}")
        return float(row[self.metric])

    def improves(self, value: float, best: float | None) -> bool:
        """Whether ``value`` replaces ``best`` (None: nothing kept yet); ties and NaN go to the later epoch."""
        if best is None or math.isnan(value) or math.isnan(best):
            return True
        return value >= best if self.mode == "max" else value <= best
