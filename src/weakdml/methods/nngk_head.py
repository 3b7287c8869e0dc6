"""The nearest-neighbour Gaussian-kernel classifier (NNGK, Meyer et al. 2017), vectorised over the batch.

Each labelled training image j is a centre c_j = f(x_j) with label y_j and a learnable log-weight θ_j. For an
embedding z and its neighbourhood N(z) (K centres), the class score is
    p̃_c(z) = Σ_{j ∈ N(z), y_j = c} exp(θ_j − ‖z − c_j‖² / (2σ²)),     p_c = p̃_c / Σ_c' p̃_c'.
Everything is computed in log space (per-class log-sum-exp), in float32 even under autocast, so nothing underflows
even for large distances. A class with no centre in N(z) gets a log-score ``ABSENT_CLASS_GAP`` below the best class
(a relative probability of 1e-10), so its negative log-likelihood is finite and still pushes the wrong classes away.
Centres are a no-gradient bank refreshed by the method; training neighbours are the K nearest *other* centres of the
sample's own centre, query neighbours are the K nearest centres of z (found by exact chunked search).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from weakdml.evaluation.knn import Backend, knn_search

ABSENT_CLASS_GAP = math.log(1e10)
MATMUL_LIMIT = 2**24  # entries of the (batch, bank) product above which neighbours are gathered instead


def class_log_scores(
    z: torch.Tensor,
    centres: torch.Tensor,
    centre_labels: torch.Tensor,
    log_weights: torch.Tensor,
    neighbours: torch.Tensor,
    sigma: torch.Tensor,
    num_classes: int,
    centre_sq_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p̃_c for embeddings z (B, D) over their neighbour centres ``neighbours`` (B, K) -> (B, C).

    Gradients flow into z, the log-weights and sigma; the centres are treated as constants. ``centre_sq_norms``
    (N,), the centres' squared norms, saves recomputing them on every call.
    """
    with torch.autocast(device_type=z.device.type, enabled=False):
        z, centres = z.float(), centres.float()
        dots = NeighbourDots.apply(z, centres, neighbours)  # (B, K)
        norms = centres.pow(2).sum(1) if centre_sq_norms is None else centre_sq_norms
        centre_sq = norms[neighbours]
        sq_dist = (z.pow(2).sum(1, keepdim=True) + centre_sq - 2 * dots).clamp(min=0)  # (B, K)
        scores = log_weights[neighbours] - sq_dist / (2 * sigma.float() ** 2)  # log kernel values (B, K)
        labels = centre_labels[neighbours]  # (B, K)
        # per-class log-sum-exp: shift each class by its own (constant) maximum, sum, take the log, shift back
        shift = torch.full((z.shape[0], num_classes), -math.inf, device=z.device)
        shift = shift.scatter_reduce(1, labels, scores.detach(), reduce="amax")  # (B, C), -inf for absent classes
        sums = torch.zeros_like(shift).scatter_add(1, labels, torch.exp(scores - shift.gather(1, labels)))
        return floored(torch.log(sums) + shift)  # -inf where a class has no neighbour


class NeighbourDots(torch.autograd.Function):
    """z_b · c_j for each row b and its neighbours j (B, K), with a backward pass that reads only those neighbours.

    Forward: one product with the whole bank, then a gather, unless the (batch, bank) product would exceed
    ``MATMUL_LIMIT`` entries (then the neighbours are gathered and multiplied). Backward: ∂L/∂z_b = Σ_k g_bk c_{j_bk}
    as a weighted ``embedding_bag`` sum, instead of autograd's (B, N) mostly-zero product with the bank (faster:
    docs/results.md, design decisions). The centres must be constants (a no-gradient bank).
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, centres: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        if ctx.needs_input_grad[1]:
            raise ValueError("the NNGK centres are constants: pass them detached (no gradient flows into the bank)")
        ctx.save_for_backward(centres, neighbours)
        if z.shape[0] * len(centres) <= MATMUL_LIMIT:
            return (z @ centres.T).gather(1, neighbours)
        return torch.bmm(centres[neighbours], z.unsqueeze(2)).squeeze(2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        centres, neighbours = ctx.saved_tensors
        return F.embedding_bag(neighbours, centres, per_sample_weights=grad.contiguous(), mode="sum"), None, None


def all_centres_log_scores(
    z: torch.Tensor,
    centres: torch.Tensor,
    centre_labels: torch.Tensor,
    log_weights: torch.Tensor,
    sigma: torch.Tensor,
    num_classes: int,
    exclude: torch.Tensor | None = None,
    centre_sq_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p̃_c for embeddings z (B, D) over every centre but those ``exclude`` (B, m) names per row -> (B, C).

    Dense: one product with the bank, the excluded kernels set to zero, and the per-class sums as one product with the
    labels' one-hot matrix. A single shift per row (its largest log-kernel) is exact for every class above the floor,
    which lies ``ABSENT_CLASS_GAP`` below the best class, far above float32 underflow.
    """
    with torch.autocast(device_type=z.device.type, enabled=False):
        z, centres = z.float(), centres.float()
        norms = centres.pow(2).sum(1) if centre_sq_norms is None else centre_sq_norms
        sq_dist = (z.pow(2).sum(1, keepdim=True) + norms - 2 * z @ centres.T).clamp(min=0)  # (B, N)
        scores = log_weights - sq_dist / (2 * sigma.float() ** 2)
        if exclude is not None:
            scores = scores.scatter(1, exclude, -math.inf)
        shift = scores.detach().max(dim=1, keepdim=True).values
        one_hot = F.one_hot(centre_labels, num_classes).to(scores.dtype)  # (N, C)
        sums = (torch.exp(scores - shift) @ one_hot).clamp(min=torch.finfo(scores.dtype).tiny)
        return floored(torch.log(sums) + shift)


def floored(log_scores: torch.Tensor) -> torch.Tensor:
    """Raise each class's log-score to at least the best class's minus ``ABSENT_CLASS_GAP`` (no gradient there)."""
    floor = log_scores.detach().max(dim=1, keepdim=True).values - ABSENT_CLASS_GAP
    return torch.maximum(log_scores, floor)


class NNGKHead(nn.Module):
    """The support bank (centres, labels, training neighbour lists) and the learnable kernel parameters."""

    def __init__(self, num_centres: int, dim: int, num_classes: int, neighbours: int,
                 sigma: float, learnable_sigma: bool = False, backend: Backend = "torch") -> None:
        super().__init__()
        self.num_classes, self.backend = num_classes, backend
        self.k = neighbours
        self.log_weights = nn.Parameter(torch.zeros(num_centres))
        log_sigma = torch.tensor(math.log(sigma))
        if learnable_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.register_buffer("centres", torch.zeros(num_centres, dim))
        self.register_buffer("centre_sq_norms", torch.zeros(num_centres))
        self.register_buffer("centre_labels", torch.zeros(num_centres, dtype=torch.long))
        self.register_buffer("train_neighbours", torch.zeros(num_centres, self.train_k, dtype=torch.long))
        self.register_buffer("refreshed_at", torch.tensor(-1))

    @property
    def train_k(self) -> int:
        return max(1, min(self.k, len(self.log_weights) - 1))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    @torch.no_grad()
    def refresh(self, centres: torch.Tensor, labels: torch.Tensor, epoch: int) -> None:
        """Replace the bank by new centre embeddings and recompute each centre's K nearest other centres (with the
        head's search backend: an approximate index for banks of millions)."""
        self.centres.copy_(centres.float())
        self.centre_sq_norms.copy_(self.centres.pow(2).sum(1))
        self.centre_labels.copy_(labels)
        k = self.train_k
        _, idx = knn_search(self.centres, self.centres, k, exclude_self=len(centres) > 1, backend=self.backend)
        missed = torch.nonzero((idx < 0).any(1)).flatten()  # an approximate search found fewer than K: exactly
        if len(missed):
            _, exact = knn_search(self.centres[missed], self.centres, k + 1)
            own = exact == missed[:, None]
            own[~own.any(1), -1] = True
            idx[missed] = exact[~own].view(len(missed), k)
        self.train_neighbours.copy_(idx)
        self.refreshed_at.fill_(epoch)

    def train_log_scores(self, z: torch.Tensor, centre_index: torch.Tensor) -> torch.Tensor:
        """Scores of labelled training samples over the neighbours of their own centres (B,) -> (B, C)."""
        return class_log_scores(z, self.centres, self.centre_labels, self.log_weights,
                                self.train_neighbours[centre_index], self.sigma, self.num_classes, self.centre_sq_norms)

    def query_log_scores(self, z: torch.Tensor, exclude: torch.Tensor | None = None,
                         centres: torch.Tensor | None = None, k: int | None = None) -> torch.Tensor:
        """Scores of any embeddings over their own K nearest centres (searched without gradient), leaving out the
        centres ``exclude`` (B, m) names for each row, e.g. the images a mixed sample was made of. ``centres``
        replaces the bank's (same images, embedded anew) without changing it; ``k`` replaces the head's K (when it
        covers the bank, every centre but the excluded ones is used)."""
        norms = self.centre_sq_norms if centres is None else None
        centres = self.centres if centres is None else centres
        m = 0 if exclude is None else exclude.shape[1]
        k = min(self.k if k is None else k, len(centres) - m)
        if k + m >= len(centres):  # every centre: no search, one dense product
            return all_centres_log_scores(z, centres, self.centre_labels, self.log_weights, self.sigma,
                                          self.num_classes, exclude, norms)
        _, idx = knn_search(z.detach().float(), centres, k + m)
        if exclude is not None:
            excluded = (idx[:, :, None] == exclude[:, None, :]).any(2)  # (B, k + m)
            keep_first = torch.sort(excluded.to(torch.uint8), dim=1, stable=True).indices[:, :k]
            idx = idx.gather(1, keep_first)
        return class_log_scores(z, centres, self.centre_labels, self.log_weights, idx, self.sigma, self.num_classes,
                                norms)
