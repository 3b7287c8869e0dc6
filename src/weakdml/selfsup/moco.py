"""MoCo v2 (He et al. 2020; Chen et al. 2020): a queue of negative keys, the momentum key encoder, InfoNCE, the MLP
projection head.

A query encoder f_q and a key encoder f_k (a copy of f_q, updated as f_k ← m f_k + (1 − m) f_q) embed two aug+ views
of each image; the key of the same image is the positive, the K keys of earlier batches kept in the queue are the
negatives, and the loss is cross-entropy over [q·k⁺, q·queue] / T with the positive as the target.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from weakdml.engine import dist
from weakdml.errors import UserError
from weakdml.selfsup.shuffle_bn import shuffle_bn_forward


class MoCoQueue(nn.Module):
    """A fixed-size FIFO of L2-normalised keys (K, D), with the label of each key's image (−1: unknown) for
    monitoring only. It starts with random unit vectors (unlabelled), as the original; state lives in buffers, so a
    checkpoint resumes it. ``size`` is the caller's K clipped to the number of training images."""

    def __init__(self, dim: int, size: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if size < 1:
            raise UserError(f"the MoCo queue needs at least one key, got size {size}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Replace the oldest entries by ``keys`` (B, D), wrapping around; of a batch larger than the queue only the
        newest K keys stay."""
        size = self.keys.shape[0]
        keys = keys.detach()[-size:]
        labels = torch.full((len(keys),), -1, dtype=torch.long) if labels is None else labels[-size:]
        slots = (self.pointer + torch.arange(len(keys), device=self.keys.device)) % size
        self.keys[slots] = keys.to(self.keys.dtype)
        self.labels[slots] = labels.to(self.labels.device)
        self.pointer.copy_((self.pointer + len(keys)) % size)


@torch.no_grad()
def momentum_update(query_net: nn.Module, key_net: nn.Module, m: float) -> None:
    """Key parameters ← m · key + (1 − m) · query (MoCo's momentum encoder, m 0.999). Buffers (BatchNorm statistics)
    are left alone: the key encoder keeps its own running statistics from its own forward passes. One fused update
    of every parameter (a few kernel launches on a GPU, not one per parameter)."""
    queries, keys = list(query_net.parameters()), list(key_net.parameters())
    if len(queries) != len(keys):
        raise ValueError("the key encoder's parameters do not match the query encoder's")
    torch._foreach_lerp_(keys, queries, 1 - m)


class _InfoNCE(torch.autograd.Function):
    """InfoNCE with its gradient in closed form, d loss / d q_i = (E_p[x] − k_i) / (T·B) with p the softmax over
    x ∈ {k_i} ∪ queue: the (B, K) logits are computed once, exponentiated in place and kept for the backward
    product, with no concatenation, scaling or log-softmax pass over them (about 40 % less time than autograd
    through ``cross_entropy`` at a 15,000-key queue on one CPU thread)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
        scaled = q / temperature
        positive = (scaled * k).sum(1, keepdim=True)  # (B, 1)
        weights = scaled @ queue.T  # (B, K) logits of the negatives
        shift = torch.maximum(weights.amax(1, keepdim=True), positive)  # each row's largest logit
        weights.sub_(shift).exp_()
        positive_weight = (positive - shift).exp()
        total = weights.sum(1, keepdim=True) + positive_weight  # Σ_j exp(s_j − shift)
        ctx.save_for_backward(k, queue, weights, positive_weight, total)
        ctx.temperature = temperature
        return (total.log() + shift - positive).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        k, queue, weights, positive_weight, total = ctx.saved_tensors
        expected = (weights @ queue + positive_weight * k) / total  # (B, D): E_p[x] for each query
        return (expected - k) * (grad / (ctx.temperature * len(k))), None, None, None


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE of queries q (B, D) against their positive keys k (B, D) and the negatives in ``queue`` (K, D), all
    L2-normalised: the mean cross-entropy of the logits [q·k, q·queueᵀ] / T (B, 1 + K) with target 0. No gradient
    reaches the keys or the queue. In float32 under mixed precision: logits of up to 1/T lose their differences in 16
    bits."""
    with torch.autocast(q.device.type, enabled=False):
        return _InfoNCE.apply(q.float(), k.detach().float(), queue.detach().float(), temperature)


class ProjectionHead(nn.Module):
    """MoCo v2's MLP on the pooled features, Linear(d, d) – ReLU – Linear(d, 128), or MoCo v1's single Linear(d, 128)
    with ``mlp=False``; the output L2-normalised."""

    def __init__(self, in_features: int, out_features: int = 128, mlp: bool = True) -> None:
        super().__init__()
        layers = [nn.Linear(in_features, in_features), nn.ReLU(inplace=True)] if mlp else []
        self.layers = nn.Sequential(*layers, nn.Linear(in_features, out_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(features), dim=1)


class MoCo(nn.Module):
    """Query encoder (backbone + projection), its momentum copy and the queue; ``forward`` is one MoCo v2 loss.

    The key encoder gets no gradients; each call first moves it towards the query encoder, then embeds the key views
    with shuffle-BN in ``shuffle_groups`` groups, computes the InfoNCE loss against the queue and enqueues the keys.
    ``backbone`` maps images to pooled features of size ``features``; after pretraining it is what other methods
    start from.
    """

    def __init__(self, backbone: nn.Module, features: int, queue_size: int, dim: int = 128, momentum: float = 0.999,
                 temperature: float = 0.2, mlp: bool = True, shuffle_groups: int = 8,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.backbone, self.head = backbone, ProjectionHead(features, dim, mlp)
        self.key_encoder = copy.deepcopy(nn.Sequential(self.backbone, self.head)).requires_grad_(False)
        self.queue = MoCoQueue(dim, queue_size, generator)
        self.momentum, self.temperature, self.shuffle_groups = momentum, temperature, shuffle_groups

    def forward(self, query_views: torch.Tensor, key_views: torch.Tensor, generator: torch.Generator,
                labels: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of two views (B, C, H, W) of the same B images; ``labels`` (B,) only tag the queued keys.
        With several processes the views are this process's rows of the global batch, at ``positions`` (B,) of it
        (None: its contiguous rows): the keys of the whole batch are computed with shuffle-BN across the processes
        and enqueued by every process, so that all keep the same queue (``labels`` then tag the global batch)."""
        q = self.head(self.backbone(query_views))  # (B, dim)
        with torch.no_grad():
            momentum_update(nn.Sequential(self.backbone, self.head), self.key_encoder, self.momentum)
            every_key_view = dist.gather_rows(key_views, positions)  # (N, C, H, W): the global batch
            groups = min(self.shuffle_groups, len(every_key_view))
            keys = shuffle_bn_forward(self.key_encoder, every_key_view, groups, generator)  # (N, dim)
        own = keys if dist.world_size() == 1 else keys[dist.rows(len(keys)) if positions is None else positions]
        loss = moco_loss(q, own, self.queue.keys.clone(), self.temperature)
        self.queue.enqueue(keys, labels)
        return loss
