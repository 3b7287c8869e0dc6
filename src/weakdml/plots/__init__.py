"""Figures of runs and comparisons: accuracy curves, t-SNE (still and animated), the four feature spaces."""

from weakdml.plots.make import FIGURES, make_plots

__all__ = ["FIGURES", "make_plots"]
