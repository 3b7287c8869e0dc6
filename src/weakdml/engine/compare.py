"""A multi-seed comparison: every method × seed trained with the same settings into ``<out>/runs/<method>-s<seed>/``
(so a seed gives every method the same split), finished runs skipped, interrupted ones resumed, then the table.

Running the same command again after an interruption continues the study where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from weakdml.config import Config, build_config, same_setting, settings_with_role
from weakdml.engine import run
from weakdml.engine.pipeline import method_names, sections_of
from weakdml.errors import UserError
from weakdml.evaluation.tables import MethodRow, SeedResult, write_tables

log = logging.getLogger("weakdml")
# Settings that may differ between the runs of one study (they do not change what is learned).
FREE_SETTINGS = settings_with_role("bookkeeping", "location")
_RUN_NAME = re.compile(r"^(?P<method>.+)-s(?P<seed>\d+)$")


def parse_seeds(text: str) -> list[int]:
    """Seeds from '0-9', '0,3,5', '3' or mixes such as '0-2,7', in the given order without repeats."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise UserError(f"--seeds expects e.g. 0-9, 0,3,5 or 3; cannot read {part.strip()!r}")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        seeds += [s for s in range(first, last + 1) if s not in seeds]
    return seeds


def parse_methods(text: str) -> list[str]:
    """Method names from 'nngk,mixup,...' in the given order without repeats; unknown names are a UserError."""
    methods = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    unknown = [m for m in methods if m not in method_names()]
    if unknown or not methods:
        raise UserError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from "
                        f"{', '.join(method_names())}")
    return methods


def default_out(cfg: Config) -> Path:
    """comparisons/<dataset>-<labelled fraction> (or -<n>-per-class)."""
    d = cfg.data
    amount = f"{d.labels_per_class}-per-class" if d.labels_per_class else f"{d.labeled_fraction:g}"
    return Path("comparisons") / f"{d.dataset}-{amount}"


def run_dir(out: Path, method: str, seed: int) -> Path:
    return out / "runs" / f"{method}-s{seed}"


def _flat(cfg: Config) -> dict[str, Any]:
    """The settings that change what the run's method learns: those of the sections it reads, but free ones."""
    read = sections_of(cfg.train.method) if cfg.train.method in method_names() else tuple(cfg.to_dict())
    return {k: v for name, section in cfg.to_dict().items() if name in read for k, v in section.items()
            if k not in FREE_SETTINGS}


def _check_same_settings(directory: Path, wanted: Config) -> None:
    """A run already in the study must have been trained with this study's settings, or the table would mix them."""
    saved, now = _flat(build_config(directory / "config.yaml")), _flat(wanted)
    # a setting left unset (None) now was resolved by the method when the run was made (e.g. l2_normalize)
    differ = [f"{k}={saved[k]!r} (now {now[k]!r})" for k in now
              if now[k] is not None and not same_setting(saved.get(k), now[k])]
    if differ:
        raise UserError(f"{directory} was trained with other settings: {', '.join(differ)}; "
                        "use the same settings or another --out")


def run_study(out: Path, methods: list[str], seeds: list[int], config: str | Path | None = None,
              overrides: dict[str, Any] | None = None) -> None:
    """Train every method × seed into ``out``: skip finished runs, resume interrupted ones, train the others."""
    overrides = {k: v for k, v in (overrides or {}).items() if k not in ("method", "seed", "out")}
    plan = [(m, s, run_dir(out, m, s)) for m in methods for s in seeds]
    # Build (and so validate) every run's config before training anything.
    configs = [build_config(config, overrides | {"method": m, "seed": s, "out": str(d)}) for m, s, d in plan]
    resumable = {k: v for k, v in overrides.items() if k in FREE_SETTINGS}
    for i, ((method, seed, directory), cfg) in enumerate(zip(plan, configs), start=1):
        step = f"[{i}/{len(plan)}] {method} seed {seed}"
        if read_result(directory, seed) is not None:
            _check_same_settings(directory, cfg)
            log.info(f"{step}: finished, skipped")
        elif run.holds_run(directory):
            _check_same_settings(directory, cfg)
            log.info(f"{step}: resuming {directory}")
            run.resume(directory, resumable)
        else:
            log.info(f"{step}: training into {directory}")
            run.train(cfg)


def read_result(directory: Path, seed: int) -> SeedResult | None:
    """A finished run's result (None while unfinished, or when its final metrics are damaged: then resuming the run
    evaluates it again)."""
    final = directory / "final_metrics.json"
    if not final.is_file():
        return None
    try:
        metrics = json.loads(final.read_text(encoding="utf-8"))
        return SeedResult(seed, 100 * float(metrics[metrics.get("primary_metric", "test_accuracy")]),
                          100 * float(metrics.get("test_knn_accuracy", math.nan)),
                          float(metrics.get("train_seconds", math.nan)))
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning(f"{final} is damaged: the run counts as unfinished (running the comparison again evaluates it "
                    f"anew)")
        return None


def primary_metric(out: Path, methods: list[str], seeds: list[int]) -> str:
    """The metric the study's finished runs report first (their task's), test_accuracy when none has finished."""
    for method in methods:
        for seed in seeds:
            try:
                return json.loads((run_dir(out, method, seed) / "final_metrics.json").read_text())["primary_metric"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return "test_accuracy"


def mixed_settings(out: Path, method: str, seeds: list[int]) -> list[str]:
    """The settings in which a method's runs (of the given seeds, where they exist) differ, as 'name (a, b)'."""
    files = [run_dir(out, method, seed) / "config.yaml" for seed in seeds]
    found = [_flat(build_config(file)) for file in files if file.is_file()]
    names = sorted({k for settings in found for k in settings} - {"seed"})
    values = {k: list(dict.fromkeys(repr(settings.get(k)) for settings in found)) for k in names}
    return [f"{k} ({', '.join(v)})" for k, v in values.items() if len(v) > 1]


def collect(out: Path, methods: list[str], seeds: list[int]) -> list[MethodRow]:
    """One row per method (in the given order) with its finished seeds and the seeds still missing."""
    rows = []
    for method in methods:
        results = {seed: read_result(run_dir(out, method, seed), seed) for seed in seeds}
        rows.append(MethodRow(method, [r for r in results.values() if r is not None],
                              [s for s, r in results.items() if r is None]))
    return rows


def discover(out: Path) -> tuple[list[str], list[int]]:
    """Methods (registry order, then others by name) and seeds (ascending) of the run directories in ``out/runs``."""
    found = [_RUN_NAME.match(d.name) for d in sorted((out / "runs").glob("*-s*")) if d.is_dir()]
    names = {m["method"] for m in found if m}
    if not names:
        raise UserError(f"{out / 'runs'} holds no runs named <method>-s<seed>; give --out of a comparison")
    methods = [m for m in method_names() if m in names] + sorted(names - set(method_names()))
    return methods, sorted({int(m["seed"]) for m in found if m})


def compare(out: Path, methods: list[str] | None, seeds: list[int] | None, config: str | Path | None = None,
            overrides: dict[str, Any] | None = None, table_only: bool = False) -> str:
    """Run the study (unless ``table_only``) and write its tables into ``out``; return the Markdown table.
    With ``table_only``, methods and seeds default to those found in ``out/runs``."""
    if table_only:
        if methods is None or seeds is None:
            found_methods, found_seeds = discover(out)
            methods, seeds = methods or found_methods, seeds or found_seeds
        for method in methods:  # runs put together by hand (or extended) may not share their settings
            if differ := mixed_settings(out, method, seeds):
                log.warning(f"the {method} runs were trained with different settings, which the table mixes: "
                            f"{'; '.join(differ)}")
    else:
        if methods is None or seeds is None:
            raise UserError("give --methods and --seeds (e.g. --methods nngk,mixup --seeds 0-9), or --table-only")
        run_study(out, methods, seeds, config, overrides)
    return write_tables(collect(out, methods, seeds), out, primary_metric(out, methods, seeds))
