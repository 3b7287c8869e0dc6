"""All figures for run and comparison directories: what `weakdml plot` does.

Curves cover every given run (grouped by dataset); the t-SNE, its animation and the feature spaces are drawn for the
first (lowest-seed) run of each method, from its best-on-validation model and its snapshots.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from weakdml.errors import UserError
from weakdml.plots.curves import plot_curves
from weakdml.plots.runs import RunInfo, find_runs, first_of_each_method, recorded_class_names, snapshot_files

log = logging.getLogger("weakdml")
FIGURES = ("curves", "tsne", "gif", "spaces")


def parse_what(what: str | None) -> tuple[str, ...]:
    """The comma-separated figure kinds to draw (all of FIGURES when None)."""
    if not what:
        return FIGURES
    kinds = tuple(k.strip() for k in what.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(FIGURES))
    if unknown or not kinds:
        raise UserError(f"unknown figure kind(s) {', '.join(unknown) or repr(what)}; choose from {','.join(FIGURES)}")
    return kinds


def make_plots(directories: Iterable[Path], out: Path | None = None, what: Iterable[str] = FIGURES,
               device: str = "cpu") -> list[Path]:
    """Draw the requested figures of run/comparison directories into ``out`` (default: first directory/plots)."""
    directories = [Path(d) for d in directories]
    if not directories:
        raise UserError("give at least one run or comparison directory")
    runs = [run for d in directories for run in find_runs(d)]
    out = out or directories[0] / "plots"
    what = set(what)
    written: list[Path] = []
    if "curves" in what:
        for dataset in dict.fromkeys(run.dataset for run in runs):
            same = [run for run in runs if run.dataset == dataset]
            written.append(plot_curves(same, out / f"curves-{dataset}.png"))
    if what & {"tsne", "gif", "spaces"}:
        for run in first_of_each_method(runs):
            written += run_figures(run, out, what, device)
    return written


def run_figures(run: RunInfo, out: Path, what: set[str], device: str = "cpu") -> list[Path]:
    """The t-SNE (PNG), its animation over epochs (GIF) and the four feature spaces (PNG) of one run."""
    from weakdml.data.sources import all_images
    from weakdml.engine.run import load_run
    from weakdml.plots.feature_spaces import feature_space_figure
    from weakdml.plots.tsne import animate_tsne, plot_tsne

    title = f"{run.method} on {run.dataset} (seed {run.seed})"
    written: list[Path] = []
    data = method = None
    if what & {"tsne", "spaces"}:
        _, data, method, _ = load_run(run.path, device)
    class_names = data.bundle.classes if data is not None else recorded_class_names(run.path)
    if "tsne" in what and method is not None and data is not None:
        embeddings = method.embed_all(data.test).cpu().numpy()
        written.append(plot_tsne(embeddings, data.test.labels.numpy(), data.bundle.classes,
                                 out / f"{run.name}-tsne.png", f"t-SNE of test embeddings: {title}", run.seed))
    if "gif" in what:
        if snapshot_files(run.path):
            accuracy = {row["epoch"]: row["test_accuracy"] for row in run.rows if "test_accuracy" in row}
            written.append(animate_tsne(run.path, out / f"{run.name}-tsne.gif", class_names, title, accuracy,
                                        seed=run.seed))
        else:
            log.info(f"{run.path}: no snapshots/, no t-SNE animation (train with --snapshot-images > 0)")
    if "spaces" in what and method is not None and data is not None:
        if hasattr(method, "head"):
            written.append(feature_space_figure(method, all_images(data.test), data.test.labels, data.bundle.classes,
                                                out / f"{run.name}-feature-spaces.png",
                                                f"Feature spaces of {title}", run.seed))
        else:
            log.info(f"{run.path}: {run.method} has no NNGK head, no feature-space figure")
    return written
