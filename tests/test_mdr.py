"""MDR against a plain re-implementation with loops over pairs."""

import math

import pytest
import torch

from weakdml.errors import UserError
from weakdml.losses import MDRLoss


def mdr_loop(batches: list[torch.Tensor], levels: list[float], weight: float, nu: float, momentum: float) -> float:
    """The regulariser of the last batch after tracking every batch, with Python loops over the pairs i != j."""
    mean = std = None
    for x in batches:
        d = [math.dist(x[i].tolist(), x[j].tolist()) for i in range(len(x)) for j in range(len(x)) if i != j]
        m = sum(d) / len(d)
        s = math.sqrt(sum((v - m) ** 2 for v in d) / (len(d) - 1))
        if mean is None:
            mean, std = m, s
        else:
            mean, std = momentum * mean + (1 - momentum) * m, momentum * std + (1 - momentum) * s
    nearest = [min(abs((v - mean) / std - level) for level in levels) for v in d]
    return weight * sum(nearest) / len(nearest) + nu * sum(level**2 for level in levels)


def test_mdr_matches_loop_over_batches():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(7, 5, generator=g) * (1 + i) for i in range(3)]  # the distances' scale changes
    mdr = MDRLoss(weight=0.6, level_penalty=0.01, levels=(-2.0, 0.5, 2.5), momentum=0.9)
    for x in batches:
        value = mdr(x)
    assert value.item() == pytest.approx(mdr_loop(batches, [-2.0, 0.5, 2.5], 0.6, 0.01, 0.9), rel=1e-5)


def test_mdr_gradients_and_eval_mode():
    x = torch.randn(16, 8, requires_grad=True)
    mdr = MDRLoss()
    mdr(x).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert mdr.levels.grad is not None and mdr.levels.grad.abs().sum() > 0  # the levels learn
    mean = mdr.running_mean.clone()
    mdr.eval()
    mdr(2 * x.detach())
    assert torch.equal(mdr.running_mean, mean)  # statistics move in training mode only
    duplicate = torch.cat([x.detach()[:4], x.detach()[:4]]).requires_grad_(True)  # zero distances off the diagonal
    mdr.train()
    mdr(duplicate).backward()
    assert torch.isfinite(duplicate.grad).all()


def test_mdr_errors():
    with pytest.raises(UserError, match="B >= 3"):
        MDRLoss()(torch.randn(2, 4))
    with pytest.raises(UserError, match="momentum"):
        MDRLoss(momentum=1.0)
