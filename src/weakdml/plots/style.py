"""Shared look of the figures: the Agg backend, a colour per class or method, class legends, saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

MAX_LEGEND_CLASSES = 20

plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "figure.titlesize": 14, "legend.fontsize": 9})


def colours(n: int) -> np.ndarray:
    """n distinct RGBA colours: tab10 up to 10, tab20 up to 20, then evenly spaced on a rainbow map."""
    if n <= 10:
        return plt.get_cmap("tab10")(np.arange(n))
    if n <= 20:
        return plt.get_cmap("tab20")(np.arange(n))
    return plt.get_cmap("gist_rainbow")(np.linspace(0, 1, n, endpoint=False))


def scatter_classes(ax: Axes, xy: np.ndarray, labels: np.ndarray, class_names: list[str], size: float = 10) -> None:
    """Points (N, 2) coloured by class, each class labelled for the legend."""
    palette = colours(len(class_names))
    for c, name in enumerate(class_names):
        mask = labels == c
        if mask.any():
            ax.scatter(xy[mask, 0], xy[mask, 1], s=size, color=palette[c], label=name, alpha=0.8, linewidths=0)


def class_legend(fig: Figure, ax: Axes, num_classes: int, x: float = 1.0) -> None:
    """A legend of the classes (and other labelled artists of ``ax``) at figure position x, vertically centred;
    left out above MAX_LEGEND_CLASSES classes."""
    if num_classes > MAX_LEGEND_CLASSES:
        return
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(x, 0.5), title="class", markerscale=2,
               frameon=False)


def blank_axes(ax: Axes, xlabel: str = "t-SNE 1", ylabel: str = "t-SNE 2") -> None:
    """Axes of a projection whose coordinates have no units: labels but no tick values."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def save(fig: Figure, path: Path) -> Path:
    """Write a figure as PNG (tight, 120 dpi) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
