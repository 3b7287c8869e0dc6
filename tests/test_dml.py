"""The DML baselines: the m-per-class sampler, each loss against pytorch-metric-learning (and the triplet loss against
a plain loop over the mined triplets), and a short contrastive training on digits that clearly beats chance."""

import itertools
from collections import Counter

import pytest
import torch
from pytorch_metric_learning import losses, miners
from tiny import tiny_method

from weakdml.data.samplers import batch_shape, m_per_class_batches
from weakdml.engine.optim import build_optimizer
from weakdml.errors import UserError
from weakdml.methods import Batch
from weakdml.methods.dml import DMLMethod

DML = ["contrastive", "proxy-anchor", "soft-triple", "supcon", "triplet"]


def batches(labels: torch.Tensor, batch_size: int, m: int, seed: int) -> list[torch.Tensor]:
    return list(m_per_class_batches(labels, batch_size, m, torch.Generator().manual_seed(seed)))


# -- sampler ---------------------------------------------------------------------------------------------------------
def test_balanced_epoch_has_m_images_of_each_class_and_every_image_once():
    labels = torch.arange(6).repeat_interleave(8)[torch.randperm(48, generator=torch.Generator().manual_seed(0))]
    epoch = batches(labels, batch_size=8, m=4, seed=1)
    assert len(epoch) == 6
    for idx in epoch:
        assert sorted(Counter(labels[idx].tolist()).values()) == [4, 4]
    assert sorted(torch.cat(epoch).tolist()) == list(range(48))


def test_batches_are_reproducible_from_the_generator():
    labels = torch.arange(10).repeat(7)
    same = [torch.equal(a, b) for a, b in zip(batches(labels, 16, 4, seed=3), batches(labels, 16, 4, seed=3))]
    assert all(same) and len(same) == 5
    assert not all(torch.equal(a, b) for a, b in zip(batches(labels, 16, 4, seed=3), batches(labels, 16, 4, seed=4)))


def test_small_classes_repeat_their_images_and_large_ones_do_not():
    labels = torch.tensor([0] * 2 + [1] * 9 + [2] * 9)
    for idx in batches(labels, batch_size=12, m=4, seed=0):
        counts = Counter(labels[idx].tolist())
        assert set(counts.values()) == {4}
        for c, members in itertools.groupby(idx.tolist(), key=lambda i: int(labels[i])):
            members = list(members)
            assert len(set(members)) == (2 if c == 0 else 4)  # the 2-image class: each image twice


def test_fewer_classes_than_the_batch_needs_fill_the_batch_with_more_images_each():
    assert batch_shape(num_classes=3, batch_size=32, m_per_class=4) == (3, 10)
    assert batch_shape(num_classes=100, batch_size=32, m_per_class=4) == (8, 4)
    labels = torch.arange(3).repeat(20)
    for idx in batches(labels, batch_size=32, m=4, seed=0):
        assert sorted(Counter(labels[idx].tolist()).values()) == [10, 10, 10]
    with pytest.raises(UserError, match="fewer than 2"):
        batch_shape(num_classes=10, batch_size=6, m_per_class=4)


def test_method_batches_depend_only_on_seed_and_epoch():
    m, _ = tiny("supcon")
    drawn = []
    for _ in range(2):
        m.seed_epoch(3)
        drawn.append(torch.cat([b.index for b in m.batches(3)]))
    assert torch.equal(*drawn) and sorted(drawn[0].tolist()) == list(range(16))


# -- losses ----------------------------------------------------------------------------------------------------------
def tiny(method: str, **overrides) -> tuple[DMLMethod, Batch]:
    m, _ = tiny_method(method, 16, 4, batch_size=8, m_per_class=2, **overrides)
    m.seed_epoch(0)
    m.on_epoch_start(0)
    return m, next(iter(m.batches(0)))


def reference_loss(name: str, m: DMLMethod) -> torch.nn.Module:
    d = m.cfg.dml
    loss = {"contrastive": lambda: losses.ContrastiveLoss(pos_margin=d.contrastive_pos_margin,
                                                          neg_margin=d.contrastive_neg_margin),
            "proxy-anchor": lambda: losses.ProxyAnchorLoss(4, 6, margin=d.proxy_margin, alpha=d.proxy_alpha),
            "soft-triple": lambda: losses.SoftTripleLoss(4, 6, centers_per_class=d.centers_per_class,
                                                         la=d.soft_triple_la, gamma=d.soft_triple_gamma,
                                                         margin=d.soft_triple_margin),
            "supcon": lambda: losses.SupConLoss(temperature=d.supcon_temperature),
            "triplet": lambda: losses.TripletMarginLoss(margin=d.triplet_margin)}[name]()
    loss.load_state_dict(m.loss.state_dict())  # the same proxies / centres
    return loss


@pytest.mark.parametrize("name", DML)
def test_loss_equals_pytorch_metric_learning_on_the_same_embeddings(name):
    overrides = {"contrastive_pos_margin": 0.2, "contrastive_neg_margin": 0.9, "triplet_margin": 0.5}
    m, batch = tiny(name, **overrides)
    assert sorted(Counter(batch.labels.tolist()).values()) == [2, 2, 2, 2]
    step = m.training_step(batch)
    z = m.model(batch.images.float() / 255)
    mined = miners.TripletMarginMiner(margin=0.5, type_of_triplets="semihard")(z, batch.labels) \
        if name == "triplet" else None
    expected = reference_loss(name, m)(z, batch.labels, mined)
    assert step["loss"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert expected.item() > 0


def plain_kernel_accuracy(m: DMLMethod, z: torch.Tensor, batch: Batch) -> float:
    """The batch's accuracy of the kernel classifier over every other labelled image's centre (the bank holds fewer
    than K centres), one sample and one class at a time, in float64."""
    head, hits = m.head, []
    for b in range(len(z)):
        others = torch.tensor([j for j in range(len(head.centres)) if j != batch.index[b]])
        d2 = ((z[b].double() - head.centres[others].double()) ** 2).sum(1)
        kernel = torch.exp(-d2 / (2 * head.sigma.double() ** 2))
        sums = torch.stack([kernel[head.centre_labels[others] == c].sum() for c in range(head.num_classes)])
        hits.append(float(sums.argmax() == batch.labels[b]))
    return sum(hits) / len(hits)


def test_batch_accuracy_is_the_kernel_vote_over_the_other_labelled_images():
    m, batch = tiny("contrastive", sigma=0.02)  # a narrow kernel: a near twin outweighs the other centres
    z = m.model(batch.images.float() / 255).detach()
    centres, labels = m.head.centres.clone(), m.head.centre_labels.clone()
    others = [j for j in range(len(centres)) if j not in batch.index.tolist()]
    for k, j in enumerate(others[:4]):  # a near twin of each of the first four batch images, with its label
        centres[j], labels[j] = z[k] + 0.001, batch.labels[k]
    m.head.refresh(centres, labels, epoch=0)
    accuracy = m.training_step(batch)["accuracy"].item()
    assert accuracy == pytest.approx(plain_kernel_accuracy(m, z, batch))
    assert accuracy >= 0.5  # the twins are found


def plain_triplet_loss(z: torch.Tensor, labels: torch.Tensor, margin: float, kind: str) -> torch.Tensor:
    """Mean over the mined triplets with a positive loss of max(0, d(a,p) − d(a,n) + margin), by loops."""
    z = torch.nn.functional.normalize(z, dim=1)
    values = []
    for a, p, n in itertools.product(range(len(z)), repeat=3):
        if a == p or labels[a] != labels[p] or labels[a] == labels[n]:
            continue
        d_ap, d_an = (z[a] - z[p]).norm(), (z[a] - z[n]).norm()
        gap = d_an - d_ap
        mined = {"all": gap <= margin, "hard": gap <= 0, "semihard": 0 < gap <= margin}[kind]
        loss = torch.relu(d_ap - d_an + margin)
        if mined and loss > 0:
            values.append(loss)
    return torch.stack(values).mean()


@pytest.mark.parametrize("kind", ["semihard", "hard", "all"])
def test_triplet_loss_equals_a_plain_loop_over_the_mined_triplets(kind):
    m, batch = tiny("triplet", triplet_margin=0.5, triplet_miner=kind)
    loss = m.training_step(batch)["loss"]
    z = m.model(batch.images.float() / 255)
    assert loss.item() == pytest.approx(plain_triplet_loss(z, batch.labels, 0.5, kind).item(), rel=1e-5)


def plain_contrastive_loss(z: torch.Tensor, labels: torch.Tensor, pos_margin: float, neg_margin: float):
    """Mean of the positive values of max(0, d − m_pos) over same-class pairs, plus that of max(0, m_neg − d) over
    other-class pairs, by a loop over the pairs."""
    z = torch.nn.functional.normalize(z, dim=1)
    positive, negative = [], []
    for a, b in itertools.permutations(range(len(z)), 2):
        d = (z[a] - z[b]).norm()
        if labels[a] == labels[b]:
            positive.append(torch.relu(d - pos_margin))
        else:
            negative.append(torch.relu(neg_margin - d))
    def mean_of_positive(values):
        return torch.stack([v for v in values if v > 0] or [torch.tensor(0.0)]).mean()

    return mean_of_positive(positive) + mean_of_positive(negative)


def test_contrastive_loss_equals_a_plain_loop_over_the_pairs():
    m, batch = tiny("contrastive", contrastive_pos_margin=0.2, contrastive_neg_margin=0.9)
    loss = m.training_step(batch)["loss"]
    z = m.model(batch.images.float() / 255)
    expected = plain_contrastive_loss(z, batch.labels, 0.2, 0.9)
    assert expected.item() > 0 and loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["proxy-anchor", "soft-triple"])
def test_learnable_proxies_are_optimised_and_stay_float32_under_autocast(name):
    m, batch = tiny(name)
    proxies = next(m.loss.parameters())
    optimised = {id(p) for group in build_optimizer(m, m.cfg.optim).param_groups for p in group["params"]}
    assert id(proxies) in optimised and id(m.head.log_weights) not in optimised
    before = proxies.detach().clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m.training_step(batch)["loss"]
    loss.backward()
    assert proxies.dtype == torch.float32 and proxies.grad is not None and proxies.grad.abs().sum() > 0
    assert torch.equal(proxies.detach(), before)


def test_predictions_use_a_bank_of_the_current_network():
    m, batch = tiny("contrastive")
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    m.training_step(batch)["loss"].backward()
    opt.step()
    bank = m.head.centres.clone()
    scores = m.predict_all(m.data.labeled.images)
    current = m.embed_all(m.data.labeled.images)
    assert not torch.allclose(bank, current)  # the step moved the network away from the bank
    torch.testing.assert_close(scores, m.head.query_log_scores(current, centres=current))
    assert torch.equal(m.head.centres, bank)  # the training bank is left as it is
