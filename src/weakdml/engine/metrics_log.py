"""Per-epoch metrics: a CSV and a JSON-lines file in the run directory (and TensorBoard when it is installed).

A row is one appended line of ``metrics.jsonl``; a crash while appending can leave a torn last line, which readers
skip and a resumed run cuts off. The CSV is rewritten atomically after every row. Of several processes, rank 0
writes; the others read.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
from pathlib import Path
from typing import Any

from weakdml.atomic import write_text_atomic
from weakdml.engine import dist
from weakdml.errors import UserError


def read_rows(jsonl: Path) -> list[dict[str, Any]]:
    """The complete rows of a JSON-lines file; a torn last line (an interrupted append) is left out."""
    if not jsonl.is_file():
        return []
    lines = jsonl.read_text(encoding="utf-8", errors="replace").split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if number == len(lines):  # the last line, without its newline: torn
                break
            raise UserError(f"{jsonl} line {number} is damaged; delete that line (or restore the file)") from None
    return rows


class MetricsLog:
    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        self.writer = None
        self.writes = dist.is_main()
        if self.writes and tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def rows(self) -> list[dict[str, Any]]:
        return read_rows(self.jsonl)

    def truncate_after(self, epoch: int) -> None:
        """Keep only the complete rows up to ``epoch`` (a resumed run starts after its checkpoint's epoch; -1: none,
        for a new run, so that a rerun after a failed first epoch does not append to its rows)."""
        if not self.writes:
            return
        kept = [row for row in self.rows() if row["epoch"] <= epoch]
        write_text_atomic(self.jsonl, "".join(json.dumps(row) + "\n" for row in kept))
        self._write_csv(kept)

    def append(self, row: dict[str, Any]) -> None:
        if not self.writes:
            return
        with open(self.jsonl, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._write_csv(self.rows())
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def _write_csv(self, rows: list[dict[str, Any]]) -> None:
        keys = list(dict.fromkeys(key for row in rows for key in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.csv, text.getvalue())
