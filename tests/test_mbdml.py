"""Mixup and MbDML 1–3 losses against plain re-implementations on tiny inputs (values and gradients), and the
reduction of the mixed terms to NNGK when λ = 1."""

import copy

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from test_nngk import bank_neighbours, loop_class_log_scores
from tiny import tiny_method

from weakdml.engine.trainer import load_batch
from weakdml.methods import Batch
from weakdml.methods.mixing import mix, sample_lambda


def tiny(method: str, **overrides):
    m, g = tiny_method(method, 12, 3, **{"neighbours": 5, "sigma": 0.7, **overrides})
    m.on_epoch_start(0)
    if hasattr(m, "head"):
        m.head.log_weights.data.normal_(0, 0.3, generator=g)
    idx = torch.tensor([0, 4, 5, 7, 9, 11])
    return m, load_batch(m, Batch(idx))


def reference_nll(head, z, neighbours, labels):
    scores = loop_class_log_scores(z, head.centres, head.centre_labels, head.log_weights, neighbours, head.sigma, 3)
    return F.cross_entropy(scores, labels)


def draws(m, batch):
    """The λ and permutation the method will draw, from a copy of its generator."""
    g = copy.deepcopy(m.generator)
    lam = sample_lambda(m.cfg.mixup.alpha, g)
    return lam, torch.randperm(len(batch.labels), generator=g)


def check_grads(m, loss_fast, loss_ref):
    params = [p for p in m.parameters() if p.requires_grad]
    fast = torch.autograd.grad(loss_fast, params, allow_unused=True)
    ref = torch.autograd.grad(loss_ref, params, allow_unused=True)
    for a, b in zip(fast, ref):
        if a is None or b is None:
            assert a is None and b is None or (a if a is not None else b).abs().max() == 0
        else:
            torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-6)


def test_lambda_draws():
    assert sample_lambda(0, torch.Generator()) == 1.0
    a = [sample_lambda(1.0, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert a[0] == a[1] and 0 < a[0] < 1
    g = torch.Generator().manual_seed(4)
    draws = [sample_lambda(0.4, g) for _ in range(3000)]
    assert stats.kstest(draws, stats.beta(0.4, 0.4).cdf).pvalue > 0.01  # λ ~ Beta(α, α)
    x = torch.arange(6.0).view(3, 2)
    assert torch.equal(mix(x, 0.25, torch.tensor([2, 0, 1])), 0.25 * x + 0.75 * x[[2, 0, 1]])


def test_scale_mixup_defaults_follow_the_original_commands():
    """The original README's commands: scale_mixup 2 for MbDML1–3, 1 for MbDML4; a given value wins."""
    for method, default in (("mbdml1", 2.0), ("mbdml2", 2.0), ("mbdml3", 2.0), ("mbdml4", 1.0)):
        assert tiny_method(method, 6, 3, n_unlabeled=3)[0].scale_mixup == default
        assert tiny_method(method, 6, 3, n_unlabeled=3, scale_mixup=0.5)[0].scale_mixup == 0.5


def test_mixup_loss_equals_reference():
    m, batch = tiny("mixup")
    m.seed_epoch(0)
    lam, perm = draws(m, batch)
    x = batch.images.float() / 255
    logits = m.classifier(m.model(lam * x + (1 - lam) * x[perm]))
    ref = lam * F.cross_entropy(logits, batch.labels) + (1 - lam) * F.cross_entropy(logits, batch.labels[perm])
    out = m.training_step(batch)["loss"]
    torch.testing.assert_close(out, ref)
    check_grads(m, out, ref)


def test_mbdml1_equals_reference():
    m, batch = tiny("mbdml1", beta=0.5, scale_mixup=2.0)
    m.seed_epoch(0)
    lam, perm = draws(m, batch)
    x = batch.images.float() / 255
    nngk = reference_nll(m.head, m.model(x), m.head.train_neighbours[batch.index], batch.labels)
    logits = m.classifier(m.model(lam * x + (1 - lam) * x[perm]))
    mixup = lam * F.cross_entropy(logits, batch.labels) + (1 - lam) * F.cross_entropy(logits, batch.labels[perm])
    ref = 0.5 * nngk + 2.0 * mixup
    out = m.training_step(batch)["loss"]
    torch.testing.assert_close(out.double(), ref.double(), rtol=1e-5, atol=1e-6)
    check_grads(m, out, ref)


@pytest.mark.parametrize("neighbours", ["all", "bank", "original"])
def test_mbdml2_and_3_equal_reference(neighbours):
    for method in ("mbdml2", "mbdml3"):
        m, batch = tiny(method, beta=0.5, scale_mixup=3.0, mixed_neighbours=neighbours)
        m.seed_epoch(0)
        lam, perm = draws(m, batch)
        x = batch.images.float() / 255
        z_mix = m.model(lam * x + (1 - lam) * x[perm])
        if neighbours == "original":
            nbr = m.head.train_neighbours[batch.index]
        elif neighbours == "all":  # every centre but the one or two the mixed image was made of
            nbr = [torch.tensor([j for j in range(12) if j not in (i, p)]) for i, p in
                   zip(batch.index.tolist(), batch.index[perm].tolist())]
        else:
            nbr = bank_neighbours(m.head, z_mix, torch.stack([batch.index, batch.index[perm]], 1).tolist())
        mixed = lam * reference_nll(m.head, z_mix, nbr, batch.labels) + \
            (1 - lam) * reference_nll(m.head, z_mix, nbr, batch.labels[perm])
        ref = 3.0 * mixed
        if method == "mbdml3":
            ref = ref + 0.5 * reference_nll(m.head, m.model(x), m.head.train_neighbours[batch.index], batch.labels)
        out = m.training_step(batch)["loss"]
        torch.testing.assert_close(out.double(), ref.double(), rtol=1e-5, atol=1e-6)
        check_grads(m, out, ref)


@pytest.mark.parametrize("neighbours", ["bank", "original", "all"])
def test_without_mixing_mbdml2_and_3_reduce_to_nngk(neighbours):
    """λ = 1: the mixed sample is the clean one; with a fresh bank its bank neighbours (own centre left out) are
    the NNGK training neighbours (for "all" with K = N - 1: every other centre), so MbDML2 = s·NNGK and
    MbDML3 = (β + s)·NNGK."""
    for method, factor in (("mbdml2", 3.0), ("mbdml3", 3.5)):
        k = {"all": 11}.get(neighbours, 5)  # "all" is the K = N - 1 special case
        m, batch = tiny(method, alpha=0, beta=0.5, scale_mixup=3.0, mixed_neighbours=neighbours, neighbours=k)
        nngk, _ = m.nngk_loss(m.model(batch.images.float() / 255), batch)
        torch.testing.assert_close(m.training_step(batch)["loss"], factor * nngk)
