"""t-SNE of embeddings coloured by class (PNG), and animated over the epochs of a run's snapshots (GIF).

Frames of the animation are made comparable by starting each epoch's t-SNE from the previous epoch's layout,
normalising its spread and rotating/reflecting it onto that layout (orthogonal Procrustes), with fixed axis limits.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.linalg import orthogonal_procrustes
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from weakdml.plots.runs import load_snapshot, snapshot_files
from weakdml.plots.style import blank_axes, class_legend, plt, save, scatter_classes

MAX_POINTS = 1000
MAX_FRAMES = 20


def tsne_2d(x: np.ndarray, seed: int = 0, init: np.ndarray | None = None, iterations: int = 1000) -> np.ndarray:
    """2-D t-SNE coordinates (N, 2) of features (N, D): PCA-initialised unless ``init`` (N, 2) is given.

    Runs on one thread: on a shared CPU, sklearn's OpenMP threads spin-wait and make a small t-SNE many times slower
    (docs/results.md, design decisions).
    """
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    if x.shape[1] > 50 and len(x) > 50:  # the usual PCA to 50 dimensions first: faster, less noise
        x = PCA(50, random_state=seed).fit_transform(x)
    if init is not None:  # sklearn expects a small initial spread (PCA init uses std 1e-4)
        init = (init - init.mean(0)) * (1e-4 / max(float(init[:, 0].std()), 1e-12))
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    tsne = TSNE(2, perplexity=perplexity, init="pca" if init is None else init.astype(np.float32),
                random_state=seed, learning_rate="auto", max_iter=iterations)
    with threadpool_limits(1):
        return tsne.fit_transform(x)


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of n items, drawn with a fixed seed."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def plot_tsne(embeddings: np.ndarray, labels: np.ndarray, class_names: list[str], path: Path, title: str,
              seed: int = 0) -> Path:
    """Write a t-SNE scatter of embeddings (N, D) coloured by class, with a legend of class names."""
    keep = subsample(len(embeddings), MAX_POINTS, seed)
    xy = tsne_2d(embeddings[keep], seed)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    scatter_classes(ax, xy, labels[keep], class_names, size=14)
    blank_axes(ax)
    ax.set_title(title)
    class_legend(fig, ax, len(class_names))
    return save(fig, path)


def align(xy: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """xy (N, 2) centred, scaled to unit RMS radius and, given a reference (N, 2), rotated/reflected to best match
    it (orthogonal Procrustes). No scale fitting: a layout whose clusters tighten would otherwise shrink away."""
    a = xy - xy.mean(0)
    a = a / max(float(np.sqrt((a**2).sum(1).mean())), 1e-12)
    if reference is not None:
        a = a @ orthogonal_procrustes(a, reference - reference.mean(0))[0]
    return a


def pick_frames(count: int, max_frames: int) -> list[int]:
    """At most ``max_frames`` evenly spaced indices of ``count`` items, always the first and the last."""
    return sorted(set(np.linspace(0, count - 1, min(count, max_frames)).round().astype(int).tolist()))


def animate_tsne(run_dir: Path, path: Path, class_names: list[str] | None = None, title: str = "",
                 accuracy: dict[int, float] | None = None, max_frames: int = MAX_FRAMES, seed: int = 0,
                 frame_ms: int = 600) -> Path:
    """Write a GIF of the t-SNE of a run's test-embedding snapshots, a frame per (sampled) epoch titled "epoch k"
    (1-based), with the epoch's test accuracy (``accuracy``: 0-based epoch -> fraction) when given."""
    files = snapshot_files(run_dir)
    if not files:
        raise FileNotFoundError(f"{run_dir} has no snapshots/epoch_*.npz")
    layouts, epochs, labels = [], [], np.zeros(0)
    previous = None
    for i in pick_frames(len(files), max_frames):
        epoch, embeddings, labels = load_snapshot(files[i])
        keep = subsample(len(embeddings), MAX_POINTS, seed)
        xy = tsne_2d(embeddings[keep], seed, init=previous, iterations=1000 if previous is None else 500)
        previous = align(xy, previous)
        layouts.append(previous)
        epochs.append(epoch)
    labels = labels[keep]
    names = class_names or [str(c) for c in range(int(labels.max()) + 1)]
    everything = np.concatenate(layouts)
    low, high = everything.min(0), everything.max(0)
    margin = 0.05 * (high - low)
    frames = []
    for epoch, xy in zip(epochs, layouts):
        fig, ax = plt.subplots(figsize=(6.5, 6))
        scatter_classes(ax, xy, labels, names, size=14)
        ax.set_xlim(low[0] - margin[0], high[0] + margin[0])
        ax.set_ylim(low[1] - margin[1], high[1] + margin[1])
        blank_axes(ax)
        caption = f"epoch {epoch + 1}"
        if accuracy and epoch in accuracy:
            caption += f"  (test accuracy {100 * accuracy[epoch]:.1f}%)"
        ax.set_title(caption)
        if title:
            fig.suptitle(title)
        fig.subplots_adjust(left=0.06, right=0.8, bottom=0.06, top=0.88)  # fixed layout: all frames the same
        class_legend(fig, ax, len(names), x=0.81)
        frames.append(_to_image(fig))
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [frame_ms] * (len(frames) - 1) + [3 * frame_ms]  # linger on the last epoch
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path


def _to_image(fig: plt.Figure) -> Image.Image:
    """A matplotlib figure as a palette image (for GIF frames), at a fixed size so all frames match."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB").quantize(colors=128)

