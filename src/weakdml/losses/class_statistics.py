"""Per-class diagonal covariance of embeddings, with IAA's neighbour correction for classes with few images.

Fu et al., "Intra-class Adaptive Augmentation with Neighbor Correction for Deep Metric Learning" (IEEE TMM 2022),
Sec. III (variation estimation, Eq. 15). The statistics are refreshed from an embedding pass over the training set.
Two update modes, as the original code (switched at ``class_switch`` classes):

- moving (few classes): every class seen in the pass is merged into the running statistics with the ISDA-style moving
  update: w = n_new / (n_new + n_old), clamped to >= 1 - momentum; Σ <- (1-w)Σ + wΣ_new + w(1-w)(μ_old - μ_new)²;
  μ <- (1-w)μ + wμ_new;
- per-class (many classes): the same update, except that a class with a single image in the pass keeps its previous
  statistics (one image has no variance).

Both are computed for all classes at once with ``index_add_`` (the original loops over classes, or builds an
N × C × D one-hot tensor). The neighbour correction (Eq. 15), which the original computes but never applies, is applied
here to the scale used for the synthetic samples; see :meth:`ClassStatistics.corrected_variance`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weakdml.blocks import padded_rows
from weakdml.errors import UserError


class ClassStatistics(torch.nn.Module):
    """Running per-class mean and diagonal variance (C, D), and their neighbour-corrected variance.

    Args:
        num_classes: C, labels are 0..C-1.
        embedding_size: D.
        momentum: the moving update gives new statistics a weight of at least 1 - momentum (original: 0.2).
        class_switch: above this many classes, the per-class mode (singleton classes keep their statistics).
        neighbour_correction: apply Eq. 15 (False: the ablation without it).
        num_neighbours: K nearest classes by the distance between class means.
        beta: α_k = 1 / (1 + log(1 + β (n_k - 1))) for classes with 1 <= n_k < tau images, else 0.
        gamma: the share of the global variance in the correction; 1 - γ is the neighbours'.
        tau: classes with at least this many images in the last pass are not corrected.
        sigma_mean, sigma_cov: widths of the neighbour weights over the min-max normalised distances of means and of
            variances.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        *,
        momentum: float = 0.2,
        class_switch: int = 1000,
        neighbour_correction: bool = True,
        num_neighbours: int = 25,
        beta: float = 0.1,
        gamma: float = 0.1,
        tau: int = 40,
        sigma_mean: float = 1.0,
        sigma_cov: float = 1.0,
    ) -> None:
        super().__init__()
        if num_classes < 1 or embedding_size < 1:
            raise UserError(f"num_classes and embedding_size must be positive, got {num_classes}, {embedding_size}")
        if not 0.0 <= momentum < 1.0:
            raise UserError(f"momentum must be in [0, 1), got {momentum}")
        if num_neighbours < 1 or tau < 1 or sigma_mean <= 0 or sigma_cov <= 0 or beta < 0 or not 0 <= gamma <= 1:
            raise UserError("neighbour correction needs K >= 1, tau >= 1, sigmas > 0, beta >= 0 and gamma in [0, 1]")
        self.num_classes, self.embedding_size = num_classes, embedding_size
        self.momentum, self.per_class = momentum, num_classes > class_switch
        self.neighbour_correction, self.num_neighbours = neighbour_correction, num_neighbours
        self.beta, self.gamma, self.tau = beta, gamma, tau
        self.sigma_mean, self.sigma_cov = sigma_mean, sigma_cov
        self.register_buffer("mean", torch.zeros(num_classes, embedding_size))
        self.register_buffer("variance", torch.zeros(num_classes, embedding_size))
        self.register_buffer("amount", torch.zeros(num_classes))  # images merged so far, over every pass
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.long))  # images in the last pass
        self.register_buffer("corrected", torch.zeros(num_classes, embedding_size))  # what synthesis uses

    @property
    def ready(self) -> bool:
        """Whether any statistics have been estimated yet."""
        return bool(self.amount.sum() > 0)

    @torch.no_grad()
    def update(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Merge one pass over the training set (embeddings (N, D), labels (N,)) and refresh the corrected variance."""
        x, y = self._checked(embeddings, labels)
        n_new, mean_new, var_new = class_moments(x, y, self.num_classes)
        w = n_new / (n_new + self.amount)  # (C,); NaN where a class has never been seen
        w = torch.where(n_new > 0, w.clamp_min(1.0 - self.momentum), 0.0)
        if self.per_class:
            w = torch.where(n_new == 1, 0.0, w)
        w = w.unsqueeze(1)  # (C, 1)
        self.variance.copy_((1 - w) * self.variance + w * var_new + w * (1 - w) * (self.mean - mean_new) ** 2)
        self.mean.copy_((1 - w) * self.mean + w * mean_new)
        self.amount += n_new
        self.counts.copy_(n_new.long())
        self.corrected.copy_(self.corrected_variance() if self.neighbour_correction else self.variance)

    def alpha(self) -> torch.Tensor:
        """(C,) the share of the neighbour/global estimate in each class's variance; 0 for n_k >= tau or n_k = 0."""
        n = self.counts.to(self.variance.dtype)
        a = 1.0 / (1.0 + torch.log1p(self.beta * (n - 1).clamp_min(0)))
        return torch.where((self.counts >= 1) & (self.counts < self.tau), a, 0.0)

    def corrected_variance(self, chunk_size: int = 1024) -> torch.Tensor:
        """Eq. 15: Σ^corr_k = (1 - α_k) Σ_k + α_k [(1 - γ) Σ_nb,k + γ Σ_global], (C, D).

        Σ_global = Σ_i n_i Σ_i / Σ_i n_i and Σ_nb,k = Σ_i w_i Σ_i / Σ_i w_i over the K classes i nearest to k by the
        distance of the means, w_i = n_i exp(-d̂_m² / (2σ_m²) - d̂_cv² / (2σ_cv²)). Only classes with at least two
        images in the last pass are neighbours and enter Σ_global. d̂_m and d̂_cv are the Euclidean distances between
        means and between variances, min-max normalised over k's candidate neighbours. (The original measures the
        means' distance between squared means and normalises over a row that holds its 1e12 sentinel, so every d̂ is
        about 0; and it never applies the result.)
        """
        valid = self.counts >= 2  # (C,) classes with a variance of their own
        alpha = self.alpha()
        if valid.sum() < 2 or not (alpha > 0).any():
            return self.variance.clone()
        n = self.counts.to(self.variance.dtype)
        global_var = (n[valid, None] * self.variance[valid]).sum(0) / n[valid].sum()  # (D,)
        out = self.variance.clone()
        rows = torch.nonzero(alpha > 0).squeeze(1)
        columns = torch.nonzero(valid).squeeze(1)  # the candidates, each row's own class aside
        place = torch.arange(len(columns), device=columns.device)
        position = torch.full_like(self.counts, -1).index_put_((columns,), place)
        mean, variance, n_valid = self.mean[columns], self.variance[columns], n[columns]
        k = min(self.num_neighbours, len(columns))  # a row's own class, if picked, gets weight 0 (distance inf)
        squared_norms = (mean * mean).sum(1), (variance * variance).sum(1)  # (C_valid,) each
        height = min(chunk_size, len(rows))  # two blocks reused by every chunk, their rows 64-byte aligned
        blocks = [padded_rows(out.new_empty(height * (len(columns) + 16)), height, len(columns)) for _ in range(2)]
        for start in range(0, len(rows), chunk_size):
            r = rows[start : start + chunk_size]  # (B,) classes to correct
            own = position[r].unsqueeze(1)  # (B, 1) each row's column among the candidates, -1 if none
            own_column, own_out = own.clamp_min(0), torch.where(own >= 0, torch.inf, 0.0).to(out.dtype)
            # Squared distances, (B, C_valid): min, max and order are those of the distances, so the square roots are
            # taken only of what is used. The row's own class (distance 0) never changes a maximum.
            sq_mean = _squared_distances(self.mean[r], mean, squared_norms[0], blocks[0][: len(r)])
            sq_cov = _squared_distances(self.variance[r], variance, squared_norms[1], blocks[1][: len(r)])
            hi_mean, hi_cov = sq_mean.amax(1, keepdim=True).sqrt(), sq_cov.amax(1, keepdim=True).sqrt()
            sq_mean.scatter_add_(1, own_column, own_out), sq_cov.scatter_add_(1, own_column, own_out)  # own class: inf
            nearest_sq, nearest = sq_mean.topk(k, dim=1, largest=False)  # (B, K) among the candidates
            lo_mean, lo_cov = nearest_sq[:, :1].sqrt(), sq_cov.amin(1, keepdim=True).sqrt()
            tiny = torch.finfo(out.dtype).tiny
            d_mean = (nearest_sq.sqrt() - lo_mean) / (hi_mean - lo_mean).clamp_min(tiny)
            d_cov = (sq_cov.gather(1, nearest).sqrt() - lo_cov) / (hi_cov - lo_cov).clamp_min(tiny)
            w = n_valid[nearest] * torch.exp(-d_mean**2 / (2 * self.sigma_mean**2) - d_cov**2 / (2 * self.sigma_cov**2))
            # (B, D) the neighbours' weighted mean variance, summed as it is read (no (B, K, D) gather)
            neighbour_var = F.embedding_bag(nearest, variance, per_sample_weights=w, mode="sum")
            neighbour_var /= w.sum(1, keepdim=True)
            a = alpha[r].unsqueeze(1)
            out[r] = (1 - a) * self.variance[r] + a * ((1 - self.gamma) * neighbour_var + self.gamma * global_var)
        return out

    def _checked(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = embeddings.detach(), torch.as_tensor(labels, device=embeddings.device)
        if x.ndim != 2 or x.shape[1] != self.embedding_size or y.shape != x.shape[:1]:
            raise UserError(f"expected embeddings (N, {self.embedding_size}) and labels (N,), got {tuple(x.shape)} "
                            f"and {tuple(y.shape)}")
        if y.is_floating_point() or len(y) == 0 or y.min() < 0 or y.max() >= self.num_classes:
            raise UserError(f"labels must be integers in 0..{self.num_classes - 1}")
        return x.to(self.mean.dtype), y.long()


def class_moments(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, ...]:
    """Per class: image count (C,), mean (C, D) and biased variance (C, D); zeros for classes without images."""
    n = torch.bincount(y, minlength=num_classes).to(x.dtype)  # (C,)
    per = n.clamp_min(1).unsqueeze(1)
    mean = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, y, x) / per
    var = torch.zeros_like(mean).index_add_(0, y, (x - mean[y]).square_()) / per  # two passes: no cancellation
    return n, mean, var


def _squared_distances(a: torch.Tensor, b: torch.Tensor, b_squared: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` (A, B) := the squared Euclidean distances (>= 0) between the rows of a (A, D) and b (B, D), with one
    matrix product; ``b_squared`` (B,) are the squared norms of b's rows. Writing into one block that every chunk
    reuses matters on a CPU: a fresh block of this size spends about half its product's time in page faults."""
    torch.add((a * a).sum(1, keepdim=True), b_squared, out=out)
    return out.addmm_(a, b.T, alpha=-2).clamp_min_(0)
