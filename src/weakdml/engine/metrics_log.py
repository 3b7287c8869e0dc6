"""Per-epoch metrics: a CSV and a JSON-lines file in the run directory (and TensorBoard when it is installed)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        self.writer = None
        if tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def rows(self) -> list[dict[str, Any]]:
        if not self.jsonl.is_file():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def truncate_after(self, epoch: int) -> None:
        """Drop rows of epochs after ``epoch`` (written after the checkpoint a resumed run starts from)."""
        kept = [row for row in self.rows() if row["epoch"] <= epoch]
        self.jsonl.write_text("".join(json.dumps(row) + "\n" for row in kept))
        self._write_csv(kept)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.jsonl, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        self._write_csv(self.rows())
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def _write_csv(self, rows: list[dict[str, Any]]) -> None:
        keys = list(dict.fromkeys(key for row in rows for key in row))
        with open(self.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
