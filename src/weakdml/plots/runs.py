"""Finding and reading what the plots need from run and comparison directories (files only, no models)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from weakdml.engine.metrics_log import read_rows
from weakdml.errors import UserError


@dataclass
class RunInfo:
    """A run directory with its method, dataset, seed and per-epoch metrics rows."""

    path: Path
    method: str
    dataset: str
    seed: int
    rows: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return self.path.name


def read_run(run_dir: Path) -> RunInfo:
    """Read a run's config and metrics; a directory that is not a run with metrics is a UserError."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} does not exist or is not a directory")
    config, metrics = run_dir / "config.yaml", run_dir / "metrics.jsonl"
    if not config.is_file() or not metrics.is_file():
        raise UserError(f"{run_dir} is not a weakdml run directory (config.yaml and metrics.jsonl)")
    cfg = yaml.safe_load(config.read_text()) or {}
    rows = read_rows(metrics)
    if not rows:
        raise UserError(f"{run_dir} has no metrics yet (metrics.jsonl is empty)")
    train, data = cfg.get("train", {}), cfg.get("data", {})
    return RunInfo(run_dir, str(train.get("method", "?")), str(data.get("dataset", "?")),
                   int(train.get("seed", 0)), rows)


def find_runs(directory: Path) -> list[RunInfo]:
    """The runs of a run directory (itself) or of a comparison directory (its ``runs/*``, in name order)."""
    if (directory / "runs").is_dir():
        runs = [read_run(d) for d in sorted((directory / "runs").iterdir())
                if d.is_dir() and (d / "metrics.jsonl").is_file()]
        if not runs:
            raise UserError(f"{directory}/runs holds no run with metrics yet")
        return runs
    if directory.is_dir() and not (directory / "config.yaml").is_file():
        raise UserError(f"{directory} is neither a weakdml run directory (config.yaml, metrics.jsonl) "
                        "nor a comparison directory (runs/)")
    return [read_run(directory)]


def first_of_each_method(runs: list[RunInfo]) -> list[RunInfo]:
    """The lowest-seed run of each (dataset, method), in the order the methods first appear."""
    chosen: dict[tuple[str, str], RunInfo] = {}
    for run in runs:
        key = (run.dataset, run.method)
        if key not in chosen or run.seed < chosen[key].seed:
            chosen[key] = run
    return list(chosen.values())


def recorded_class_names(run_dir: Path) -> list[str] | None:
    """The names of the test images' classes a run recorded (``classes.json``), or None: names for figures that
    need no model, without loading the data set."""
    path = run_dir / "classes.json"
    try:
        classes = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except ValueError:
        return None
    return [str(name) for name in classes] if isinstance(classes, list) else None


def snapshot_files(run_dir: Path) -> list[Path]:
    """The per-epoch embedding snapshots of a run, in epoch order."""
    return sorted((run_dir / "snapshots").glob("epoch_*.npz"))


def load_snapshot(path: Path) -> tuple[int, np.ndarray, np.ndarray]:
    """(epoch (0-based), embeddings (N, D), labels (N,)) of one snapshot file."""
    with np.load(path, allow_pickle=False) as data:
        return int(path.stem.split("_")[1]), data["embeddings"], data["labels"]
