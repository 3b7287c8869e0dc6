"""IAA: statistics, neighbour correction (Eq. 15), synthetic copies and the wrapped loss against plain loops."""

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import ContrastiveLoss, MultiSimilarityLoss, ProxyAnchorLoss, TripletMarginLoss
from pytorch_metric_learning.miners import MultiSimilarityMiner, TripletMarginMiner

from weakdml.errors import UserError
from weakdml.losses import ClassStatistics, IAALoss, iaa_lambda, iaa_pairs, multi_similarity


def class_data(sizes: list[int], dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian classes with their own means and per-dimension spreads; ``sizes[c]`` images of class c."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    means, spreads = torch.randn(len(sizes), dim, generator=g), 0.05 + 0.3 * torch.rand(len(sizes), dim, generator=g)
    x = means[labels] + spreads[labels] * torch.randn(len(labels), dim, generator=g)
    order = torch.randperm(len(x), generator=g)
    return x[order], labels[order]


def loop_update(state: dict, x: torch.Tensor, y: torch.Tensor, momentum: float, per_class: bool) -> None:
    """The original's per-class update, one class at a time, in float64."""
    for c in range(len(state["amount"])):
        xc = x[y == c].double()
        n = len(xc)
        if n == 0:
            continue
        if not (per_class and n == 1):
            mu, var = xc.mean(0), ((xc - xc.mean(0)) ** 2).mean(0)
            w = max(n / (n + state["amount"][c]), 1 - momentum)
            state["var"][c] = state["var"][c] * (1 - w) + var * w + w * (1 - w) * (state["mean"][c] - mu) ** 2
            state["mean"][c] = state["mean"][c] * (1 - w) + mu * w
        state["amount"][c] += n


@pytest.mark.parametrize("class_switch", [1000, 5])  # 12 classes: moving mode, then per-class mode
def test_statistics_update_matches_loop(class_switch):
    first = class_data([6, 1, 9, 4, 2, 7, 3, 5, 8, 1, 2, 6], 5, seed=1)
    second = class_data([3, 0, 1, 8, 1, 0, 2, 4, 1, 5, 1, 2], 5, seed=2)  # absent classes and singletons
    stats = ClassStatistics(12, 5, momentum=0.2, class_switch=class_switch, neighbour_correction=False)
    state = {"mean": torch.zeros(12, 5, dtype=torch.float64), "var": torch.zeros(12, 5, dtype=torch.float64),
             "amount": [0] * 12}
    for x, y in (first, second):
        stats.update(x, y)
        loop_update(state, x, y, 0.2, per_class=class_switch == 5)
        torch.testing.assert_close(stats.mean.double(), state["mean"], atol=1e-6, rtol=0)
        torch.testing.assert_close(stats.variance.double(), state["var"], atol=1e-6, rtol=0)
        assert stats.amount.tolist() == state["amount"]
    assert torch.equal(stats.corrected, stats.variance)  # no correction asked for
    # the modes differ exactly on singleton classes: class 1 had one image in the first pass
    assert (stats.mean[1] == 0).all() == (class_switch == 5)


def loop_eq15(stats: ClassStatistics) -> torch.Tensor:
    """Eq. 15 with plain loops over classes, in float64."""
    mean, var, n = stats.mean.double(), stats.variance.double(), stats.counts.tolist()
    valid = [i for i in range(len(n)) if n[i] >= 2]
    glob = sum(n[i] * var[i] for i in valid) / sum(n[i] for i in valid)
    out = var.clone()
    for k in range(len(n)):
        if not 1 <= n[k] < stats.tau:
            continue
        alpha = 1 / (1 + math.log(1 + stats.beta * (n[k] - 1)))
        cands = [i for i in valid if i != k]
        dm = {i: (mean[k] - mean[i]).norm().item() for i in cands}
        dc = {i: (var[k] - var[i]).norm().item() for i in cands}

        def scaled(d: dict, i: int) -> float:
            lo, hi = min(d.values()), max(d.values())
            return (d[i] - lo) / (hi - lo) if hi > lo else 0.0

        nearest = sorted(cands, key=lambda i: dm[i])[: stats.num_neighbours]
        w = [n[i] * math.exp(-scaled(dm, i) ** 2 / (2 * stats.sigma_mean**2)
                             - scaled(dc, i) ** 2 / (2 * stats.sigma_cov**2)) for i in nearest]
        nb = sum(wi * var[i] for wi, i in zip(w, nearest)) / sum(w)
        out[k] = (1 - alpha) * var[k] + alpha * ((1 - stats.gamma) * nb + stats.gamma * glob)
    return out


@pytest.mark.parametrize("class_switch", [1000, 5])
def test_corrected_variance_matches_loop_of_eq15(class_switch):
    sizes = [1, 2, 3, 5, 8, 12, 20, 39, 40, 41, 60, 4, 7, 2, 1, 30]
    x, y = class_data(sizes, 6, seed=3)
    stats = ClassStatistics(16, 6, class_switch=class_switch, num_neighbours=4, beta=0.3, gamma=0.2, tau=40,
                            sigma_mean=0.7, sigma_cov=1.3)
    stats.update(x, y)
    torch.testing.assert_close(stats.corrected.double(), loop_eq15(stats), atol=1e-6, rtol=0)
    alpha = stats.alpha()
    big = torch.tensor(sizes) >= 40
    assert (alpha[big] == 0).all() and (alpha[~big] > 0).all()
    assert torch.equal(stats.corrected[big], stats.variance[big])  # α_k = 0 for n_k >= τ: untouched
    assert not torch.allclose(stats.corrected[~big], stats.variance[~big])  # the correction is applied
    torch.testing.assert_close(alpha[3], torch.tensor(1 / (1 + math.log(1 + 0.3 * 4))))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_statistics_and_correction_equal_the_cpu_ones():
    """On a GPU: the same statistics and corrected variance as on the CPU (the candidates' positions were once built
    on the CPU and put into a GPU tensor, which fails on any class with fewer than tau images)."""
    x, y = class_data([1, 2, 3, 5, 8, 40, 41, 4, 7, 2], 6, seed=3)
    on_cpu = ClassStatistics(10, 6, class_switch=5, num_neighbours=4)
    on_gpu = ClassStatistics(10, 6, class_switch=5, num_neighbours=4).cuda()
    on_cpu.update(x, y)
    on_gpu.update(x.cuda(), y.cuda())
    for name in ("mean", "variance", "corrected"):
        torch.testing.assert_close(getattr(on_gpu, name).cpu(), getattr(on_cpu, name), atol=1e-5, rtol=1e-5)


def test_copies_spread_is_sqrt_lambda_sigma_for_every_copy():
    x, y = class_data([3000, 3000], 8, seed=4)
    iaa = IAALoss(MultiSimilarityLoss(), 2, 8, num_copies=3, lam=0.6, neighbour_correction=False)
    iaa.update_statistics(x, y)
    sigma = iaa.statistics.variance.sqrt()  # (2, 8), between 0.05 and 0.35: σ^½ would be far off
    anchors, labels = x[:4000], y[:4000]
    copies = iaa.synthesize(anchors, labels).view(3, 4000, 8)  # (M, B, D)
    for m in range(3):
        for c in range(2):
            spread = (copies[m] - anchors)[labels == c].std(0)  # (D,)
            torch.testing.assert_close(spread, math.sqrt(0.6) * sigma[c], rtol=0.06, atol=0)
    assert not torch.allclose(copies[0], copies[1])  # independent noise per copy


def test_iaa_pairs_match_loop():
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2])
    b, m = len(labels), 2
    a1, p, a2, n = iaa_pairs(labels, m)
    ref = labels.repeat(m + 1)
    pos = {(i, j) for i in range(b) for j in range(b * (m + 1)) if ref[j] == labels[i] and j % b != i}
    neg = {(i, j) for i in range(b) for j in range(b * (m + 1)) if ref[j] != labels[i]}
    assert set(zip(a1.tolist(), p.tolist())) == pos and len(a1) == len(pos)
    assert set(zip(a2.tolist(), n.tolist())) == neg and len(a2) == len(neg)
    assert max(a1.max(), a2.max()) < b  # only real samples are anchors


def ms_mining_loop(anchors, labels, refs, ref_labels, eps=0.1) -> tuple[set, set]:
    """MS mining anchor by anchor, (anchor, reference) pairs: positives exclude the anchor and its own copies
    (reference j is a copy of anchor j mod B); hard negatives beat the least similar positive, hard positives the
    most similar negative, each by eps."""
    sim = F.normalize(anchors) @ F.normalize(refs).T
    b, hard_pos, hard_neg = len(anchors), set(), set()
    for i in range(b):
        pos = [j for j in range(len(refs)) if ref_labels[j] == labels[i] and j % b != i]
        neg = [j for j in range(len(refs)) if ref_labels[j] != labels[i]]
        if pos and neg:
            hard_pos |= {(i, j) for j in pos if sim[i, j] - eps < max(sim[i, neg])}
            hard_neg |= {(i, j) for j in neg if sim[i, j] + eps > min(sim[i, pos])}
    return hard_pos, hard_neg


def ms_loop(anchors, labels, refs, ref_labels, alpha=2.0, beta=40.0, base=0.5) -> torch.Tensor:
    """Multi-Similarity over the pairs of :func:`ms_mining_loop`, averaged over the anchors."""
    sim = F.normalize(anchors) @ F.normalize(refs).T
    hard_pos, hard_neg = ms_mining_loop(anchors, labels, refs, ref_labels)
    total = anchors.new_zeros(())
    for i in range(len(anchors)):
        pos = [sim[i, j] for a, j in sorted(hard_pos) if a == i]
        neg = [sim[i, j] for a, j in sorted(hard_neg) if a == i]
        if pos:
            total = total + torch.log(1 + sum(torch.exp(-alpha * (s - base)) for s in pos)) / alpha
        if neg:
            total = total + torch.log(1 + sum(torch.exp(beta * (s - base)) for s in neg)) / beta
    return total / len(anchors)


def test_mining_ignores_own_copies():
    # 2-D unit vectors at these angles; anchor 0's own copy (55°) is its least similar positive, and would let the
    # negative at 60° through MS mining (cos 60° + 0.1 > cos 55°) if it counted
    def at(degrees):
        return torch.stack([torch.cos(torch.tensor(degrees).deg2rad()), torch.sin(torch.tensor(degrees).deg2rad())], 1)

    x, y = at([0.0, 10.0, 60.0, 70.0]), torch.tensor([0, 0, 1, 1])
    refs, ref_labels = torch.cat([x, at([55.0, 12.0, 62.0, 72.0])]), y.repeat(2)
    loss, miner = multi_similarity()
    iaa = IAALoss(loss, 2, 2, miner=miner, num_copies=1)
    a1, p, a2, n = iaa._mined(x, y, refs, ref_labels)
    hard_pos, hard_neg = ms_mining_loop(x, y, refs, ref_labels)
    assert set(zip(a1.tolist(), p.tolist())) == hard_pos and len(a1) == len(hard_pos)
    assert set(zip(a2.tolist(), n.tolist())) == hard_neg and len(a2) == len(hard_neg)
    plain = miner(x, y, refs, ref_labels)  # the miner alone counts the own copy
    assert (0, 2) in set(zip(plain[2].tolist(), plain[3].tolist())) and (0, 2) not in hard_neg


def batch(seed: int, noise: float = 0.8, b: int = 24, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 6 classes x 4 images, classes loosely clustered so that mining keeps some pairs and drops others."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(b) % 6
    return torch.randn(6, dim, generator=g)[labels] + noise * torch.randn(b, dim, generator=g), labels


def test_ms_matches_loop():
    x, y = batch(5)
    loss, miner = multi_similarity()
    iaa = IAALoss(loss, 6, 8, miner=miner)  # no statistics yet: the plain loss
    torch.testing.assert_close(iaa(x, y), ms_loop(x, y, x, y), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss(x, y, miner(x, y)), ms_loop(x, y, x, y), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_ms_iaa_matches_loop(lam):
    x, y = batch(6, noise=0.5)
    loss, miner = multi_similarity()
    iaa = IAALoss(loss, 6, 8, miner=miner, num_copies=3, lam=lam, seed=9)
    twin = IAALoss(MultiSimilarityLoss(), 6, 8, num_copies=3, lam=lam, seed=9)  # the same noise
    sx, sy = class_data([50] * 6, 8, seed=7)
    for module in (iaa, twin):
        module.update_statistics(4 * sx, sy)  # wide classes: an own copy can be an anchor's least similar positive
    copies = twin.synthesize(x, y)
    if lam == 0:
        assert torch.equal(copies, x.repeat(3, 1))  # copies equal their anchors
    refs, ref_labels = torch.cat([x, copies]), y.repeat(4)
    expected = ms_loop(x, y, refs, ref_labels)
    assert expected > 0
    torch.testing.assert_close(iaa(x, y), expected, atol=1e-5, rtol=1e-5)
    twin.loss = MultiSimilarityLoss(alpha=2, beta=40, base=0.5)
    assert not torch.isclose(twin(x, y), expected)  # without the miner: every pair counts, another value


def test_gradient_reaches_only_through_real_and_copies():
    x, y = batch(8)
    x.requires_grad_(True)
    loss, miner = multi_similarity()
    iaa = IAALoss(loss, 6, 8, miner=miner, lam=0.5)
    iaa.update_statistics(*class_data([50] * 6, 8, seed=7))
    iaa(x, y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_triplet_miner_keeps_no_own_copies():
    x, y = batch(10)
    loss, miner = TripletMarginLoss(margin=0.2), TripletMarginMiner(margin=0.2, type_of_triplets="all")
    iaa = IAALoss(loss, 6, 8, miner=miner, num_copies=2, lam=0.5)
    iaa.update_statistics(*class_data([50] * 6, 8, seed=7))
    refs = torch.cat([x, iaa.synthesize(x, y)])
    a, p, n = iaa._mined(x, y, refs, y.repeat(3))
    assert len(a) > 0 and (a < 24).all() and ((p % 24) != a).all()
    assert (y.repeat(3)[p] == y[a]).all() and (y.repeat(3)[n] != y[a]).all()
    assert iaa(x, y) > 0


def test_contrastive_iaa_matches_loop():
    x, y = batch(11)
    stats = class_data([50] * 6, 8, seed=7)
    iaa = IAALoss(ContrastiveLoss(pos_margin=0.0, neg_margin=1.0), 6, 8, num_copies=2, lam=0.5, seed=3)
    twin = IAALoss(ContrastiveLoss(), 6, 8, num_copies=2, lam=0.5, seed=3)  # the same noise
    iaa.update_statistics(*stats)
    twin.update_statistics(*stats)
    refs, ref_labels = F.normalize(torch.cat([x, twin.synthesize(x, y)])), y.repeat(3)  # PML's normalised Lp
    e = F.normalize(x)
    pos, neg = [], []
    for i in range(24):
        for j in range(72):
            d = (e[i] - refs[j]).norm()
            if ref_labels[j] == y[i] and j % 24 != i:
                pos.append(d)  # own copies (j % 24 == i) are close: counting them would lower the mean
            elif ref_labels[j] != y[i]:
                neg.append(torch.relu(1.0 - d))
    pos, neg = torch.stack(pos), torch.stack(neg)
    expected = pos[pos > 0].mean() + neg[neg > 0].mean()  # PML's AvgNonZeroReducer per sub-loss
    torch.testing.assert_close(iaa(x, y), expected, atol=1e-5, rtol=1e-5)


def test_lambda_schedule_and_errors():
    assert [iaa_lambda(0.8, e, 100) for e in (1, 40, 41, 60, 61, 80, 81, 100)] == pytest.approx(
        [0.8, 0.8, 0.72, 0.72, 0.6, 0.6, 0.48, 0.48])
    with pytest.raises(UserError, match="ProxyAnchorLoss is not one"):
        IAALoss(ProxyAnchorLoss(6, 8), 6, 8)
    iaa = IAALoss(MultiSimilarityLoss(), 6, 8)
    with pytest.raises(UserError, match="labels must be integers in 0..5"):
        iaa.update_statistics(torch.randn(10, 8), torch.arange(10))
    with pytest.raises(UserError, match=r"embeddings \(N, 8\)"):
        iaa.update_statistics(torch.randn(10, 4), torch.zeros(10, dtype=torch.long))
    with pytest.raises(UserError, match="num_copies"):
        IAALoss(MultiSimilarityLoss(), 6, 8, num_copies=0)


def test_readme_example():
    # the README's example (docs: /work/scratch/iaa/README_snippet.md), on random data
    from pytorch_metric_learning.losses import MultiSimilarityLoss

    from weakdml.losses import IAALoss, MDRLoss, iaa_lambda

    model = torch.nn.Linear(32, 512)
    iaa = IAALoss(MultiSimilarityLoss(alpha=2, beta=40, base=0.5), num_classes=100, embedding_size=512,
                  miner=MultiSimilarityMiner(epsilon=0.1), num_copies=3)
    mdr = MDRLoss(weight=0.6)
    optimizer = torch.optim.Adam([*model.parameters(), *mdr.parameters()], lr=1e-4)
    with torch.no_grad():  # every few epochs: embed the training set (test-time transforms) and refresh
        iaa.update_statistics(model(torch.randn(1000, 32)), torch.arange(1000) % 100)
    iaa.lam = iaa_lambda(0.8, epoch=10, epochs=100)
    images, labels = torch.randn(128, 32), torch.arange(128) % 32
    embeddings = model(images)
    loss = iaa(embeddings, labels) + mdr(embeddings)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and loss > 0
