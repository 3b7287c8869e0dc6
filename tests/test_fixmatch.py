"""FixMatch's masked loss against a plain loop; the EMA model against a loop of EMA updates."""

import math

import pytest
import torch
from torch import nn

from weakdml.semisup.fixmatch import ema_model, fixmatch_loss


def test_fixmatch_loss_equals_a_loop():
    g = torch.Generator().manual_seed(0)
    labeled, labels = torch.randn(4, 3, generator=g), torch.randint(0, 3, (4,), generator=g)
    weak, strong = torch.randn(14, 3, generator=g) * 4, torch.randn(14, 3, generator=g)

    def ce(z, y):
        return -math.log(z.softmax(0)[y].item())

    supervised = sum(ce(labeled[i], labels[i]) for i in range(4)) / 4
    confident = [i for i in range(14) if weak[i].softmax(0).max() >= 0.95]
    assert 0 < len(confident) < 14  # the mask matters in this example
    unsupervised = sum(ce(strong[i], weak[i].argmax().item()) for i in confident) / 14
    out = fixmatch_loss(labeled, labels, weak, strong, threshold=0.95, unlabeled_weight=2.0)
    assert out["labeled"].item() == pytest.approx(supervised, rel=1e-5)
    assert out["unlabeled"].item() == pytest.approx(unsupervised, rel=1e-5)
    assert out["loss"].item() == pytest.approx(supervised + 2 * unsupervised, rel=1e-5)
    assert out["mask_rate"].item() == pytest.approx(len(confident) / 14)


def test_fixmatch_gradient_does_not_reach_the_weak_view():
    weak = (torch.randn(5, 3) * 10).requires_grad_()
    strong = torch.randn(5, 3, requires_grad=True)
    fixmatch_loss(torch.randn(2, 3), torch.tensor([0, 1]), weak, strong)["loss"].backward()
    assert weak.grad is None and strong.grad is not None


def test_ema_model_equals_a_loop_with_the_decay_warmed_up():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = ema_model(model, decay=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    reference, decays = None, []
    for step in range(12):
        (model(torch.randn(8, 3)) - torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.update_parameters(model)
        current = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        decay = min(0.5, (1 + step) / (10 + step))  # update t = step after the first (a copy)
        decays.append(decay)
        reference = current if reference is None else {k: decay * reference[k] + (1 - decay) * current[k]
                                                       for k in current}
    assert decays[1] < 0.5 and decays[-1] == 0.5  # both regimes: warming up, then the decay asked for
    averaged = ema.module.state_dict()
    for name, value in reference.items():
        torch.testing.assert_close(averaged[name], value)
    assert not torch.allclose(averaged["0.weight"], model.state_dict()["0.weight"])
