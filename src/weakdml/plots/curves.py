"""Accuracy per epoch, one panel per split (train | validation | test), one colour per method; seeds of a method are
drawn as their mean with a shaded ± std band (as in the MbDML paper's "Train | Test" figures). Where a run has
Noisy Student rounds, a dotted line marks the epoch each round begins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from weakdml.plots.runs import RunInfo
from weakdml.plots.style import colours, plt, save

SPLITS = {"train_accuracy": "Train", "val_accuracy": "Validation", "test_accuracy": "Test"}


def accuracy_table(runs: list[RunInfo], key: str) -> np.ndarray:
    """Accuracy in % (R, E) of each run (rows) at each epoch (columns); NaN where a run lacks the epoch or key."""
    epochs = max(row["epoch"] for run in runs for row in run.rows) + 1
    table = np.full((len(runs), epochs), np.nan)
    for i, run in enumerate(runs):
        for row in run.rows:
            value = row.get(key)
            if isinstance(value, (int, float)):
                table[i, row["epoch"]] = 100 * value
    return table


def round_starts(runs: list[RunInfo]) -> dict[int, int]:
    """{epoch: round} of the first epoch of every stage after the first (Noisy Student rounds), over the runs."""
    starts: dict[int, int] = {}
    for run in runs:
        stage_of = {row["epoch"]: row.get("stage", 0) for row in run.rows}
        starts |= {e: s for e, s in stage_of.items() if s > 0 and stage_of.get(e - 1) != s}
    return starts


def plot_curves(runs: list[RunInfo], path: Path) -> Path:
    """Write the accuracy curves of runs (of one or more methods and seeds) to a PNG."""
    methods = list(dict.fromkeys(run.method for run in runs))
    groups = {m: [run for run in runs if run.method == m] for m in methods}
    splits = [k for k in SPLITS if any(k in row for run in runs for row in run.rows)]
    fig, axes = plt.subplots(1, len(splits), figsize=(4.8 * len(splits), 4.2), sharey=True, squeeze=False)
    palette = colours(len(methods))
    plotted: list[float] = []
    rounds = round_starts(runs)
    for ax, key in zip(axes[0], splits):
        for colour, method in zip(palette, methods):
            table = accuracy_table(groups[method], key)
            seen = ~np.isnan(table).all(0)
            if not seen.any():
                continue
            epochs = np.arange(1, table.shape[1] + 1)[seen]
            mean, std = np.nanmean(table[:, seen], 0), np.nanstd(table[:, seen], 0)
            plotted += mean.tolist()
            n = len(groups[method])
            ax.plot(epochs, mean, color=colour, lw=1.8, label=method + (f" ({n} seeds)" if n > 1 else ""))
            if n > 1:
                ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2, lw=0)
        for epoch, stage in rounds.items():  # drawn between the epoch before it and its own (1-based)
            ax.axvline(epoch + 0.5, color="grey", ls=":", lw=1)
            ax.annotate(f"round {stage}", (epoch + 0.5, 1), xycoords=("data", "axes fraction"), xytext=(2, -2),
                        textcoords="offset points", va="top", fontsize=7, color="grey")
        ax.set_title(SPLITS[key])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy (%)")
    if plotted:  # the first epochs of slow starters would squeeze the rest into a thin band
        axes[0, 0].set_ylim(max(0.0, float(np.percentile(plotted, 5)) - 3), min(100.0, max(plotted) + 2))
    datasets = ", ".join(dict.fromkeys(run.dataset for run in runs))
    fig.suptitle(f"Accuracy per epoch on {datasets}")
    fig.tight_layout()
    handles, names = axes[0, -1].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), title="method", frameon=False)
    return save(fig, path)
