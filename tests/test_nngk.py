"""The vectorised NNGK head against a plain per-sample loop (values and gradients), its bank logic and refresh
schedule, NNGK evaluation against a per-image reference, and a BatchNorm backbone's bank consistent with its
training-mode embeddings."""

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from tiny import tiny_method

from weakdml.config import build_config
from weakdml.data.types import ImageSet, TrainData
from weakdml.engine.tasks import classifier_metrics
from weakdml.methods import nngk_head
from weakdml.methods.base import Batch
from weakdml.methods.nngk import NNGK
from weakdml.methods.nngk_head import ABSENT_CLASS_GAP, NNGKHead, all_centres_log_scores, class_log_scores
from weakdml.models.embedding import EmbeddingNet, channel_stats


def loop_class_log_scores(z, centres, labels, log_weights, neighbours, sigma, num_classes):
    """Straight from the definition: one sample, one neighbour at a time, in float64; each class's log-sum-exp of
    its log-kernels (so that far embeddings have a reference too)."""
    rows = []
    for b in range(z.shape[0]):
        log_kernels = [[] for _ in range(num_classes)]
        for j in neighbours[b].tolist():
            d2 = ((z[b].double() - centres[j].double()) ** 2).sum()
            log_kernels[labels[j]].append(log_weights[j].double() - d2 / (2 * sigma.double() ** 2))
        logs = [torch.logsumexp(torch.stack(v), 0) if v else torch.tensor(-math.inf, dtype=torch.float64)
                for v in log_kernels]
        best = max(v.detach() for v in logs)
        rows.append(torch.stack([torch.maximum(v, best - ABSENT_CLASS_GAP) for v in logs]))
    return torch.stack(rows)


def bank_neighbours(head, z, exclude):
    """The K nearest centres of each row by brute force, without the excluded ones."""
    rows = []
    for b in range(len(z)):
        order = [j for j in torch.cdist(z[b:b + 1].detach(), head.centres)[0].argsort().tolist()
                 if j not in exclude[b]]
        rows.append(order[:head.k])
    return torch.tensor(rows)


def kernel_scores_reference(head, z):
    """Kernel class log-scores of embeddings over their K nearest centres of the bank, by brute force (float64)."""
    neighbours = bank_neighbours(head, z, [[] for _ in range(len(z))])
    return loop_class_log_scores(z, head.centres, head.centre_labels, head.log_weights, neighbours, head.sigma,
                                 head.num_classes)


def random_problem(seed, b=6, n=40, d=5, k=12, c=4):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, d, generator=g, requires_grad=True)
    centres = torch.randn(n, d, generator=g)
    labels = torch.randint(0, c, (n,), generator=g)
    log_weights = (0.3 * torch.randn(n, generator=g)).requires_grad_()
    neighbours = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(b)])
    sigma = torch.tensor(1.3, requires_grad=True)
    return z, centres, labels, log_weights, neighbours, sigma, c


def assert_same_scores_and_gradients(fast, slow, target, inputs):
    """Scores equal, and so are the cross-entropy gradients with respect to ``inputs``."""
    torch.testing.assert_close(fast.double(), slow, rtol=1e-5, atol=1e-5)
    grads_fast = torch.autograd.grad(torch.nn.functional.cross_entropy(fast, target), inputs)
    grads_slow = torch.autograd.grad(torch.nn.functional.cross_entropy(slow, target), inputs)
    for gf, gs in zip(grads_fast, grads_slow):
        torch.testing.assert_close(gf.double(), gs.double(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("whole_bank_product", [True, False])
def test_vectorised_equals_loop_values_and_gradients(seed, whole_bank_product, monkeypatch):
    if not whole_bank_product:
        monkeypatch.setattr(nngk_head, "MATMUL_LIMIT", 0)  # the gathered path for huge banks
    z, centres, labels, w, nbr, sigma, c = random_problem(seed)
    target = torch.randint(0, c, (z.shape[0],), generator=torch.Generator().manual_seed(seed))
    fast = class_log_scores(z, centres, labels, w, nbr, sigma, c)
    slow = loop_class_log_scores(z, centres, labels, w, nbr, sigma, c)
    assert_same_scores_and_gradients(fast, slow, target, (z, w, sigma))


@pytest.mark.parametrize("seed", [0, 1])
def test_all_centres_scores_equal_loop_values_and_gradients(seed):
    """The dense every-centre path against the loop over every centre but the excluded ones; row 0 names the same
    centre twice, and class 4 has no centre at all (it gets the floor)."""
    z, centres, labels, w, _, sigma, c = random_problem(seed)
    c += 1
    exclude = torch.tensor([[3, 3], [0, 7], [5, 9], [1, 2], [8, 6], [4, 39]])
    kept = [torch.tensor([j for j in range(len(centres)) if j not in row]) for row in exclude.tolist()]
    target = torch.randint(0, c - 1, (z.shape[0],), generator=torch.Generator().manual_seed(seed))
    fast = all_centres_log_scores(z, centres, labels, w, sigma, c, exclude)
    slow = loop_class_log_scores(z, centres, labels, w, kept, sigma, c)
    assert_same_scores_and_gradients(fast, slow, target, (z, w, sigma))


def test_far_embeddings_do_not_underflow():
    """σ = 10 and squared distances in the tens of thousands underflow every kernel (e^-470 and less) in float32's
    linear space; in log space the scores are the reference's, and so are the gradients."""
    z, centres, labels, w, nbr, _, c = random_problem(3)
    far_z, sigma = (z.detach() * 300).requires_grad_(), torch.tensor(10.0)
    scores = class_log_scores(far_z, centres * 300, labels, w, nbr, sigma, c)
    expected = loop_class_log_scores(far_z, centres * 300, labels, w, nbr, sigma, c)
    assert expected.max() < -110  # every kernel below float32's smallest positive number (about e^-103)
    assert_same_scores_and_gradients(scores, expected, labels[nbr[:, 0]], (far_z, w))


def test_absent_class_gets_floor():
    z = torch.zeros(1, 2)
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0])
    scores = class_log_scores(z, centres, labels, torch.zeros(2), torch.tensor([[0, 1]]), torch.tensor(1.0), 3)
    assert scores[0, 1] == pytest.approx(scores[0, 0].item() - ABSENT_CLASS_GAP)
    assert scores[0, 2] == scores[0, 1]


def test_refresh_finds_nearest_other_centres_and_query_uses_bank():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(30, 4, generator=g)
    labels = torch.randint(0, 3, (30,), generator=g)
    head = NNGKHead(30, 4, 3, neighbours=5, sigma=2.0)
    head.refresh(centres, labels, epoch=0)
    dists = torch.cdist(centres, centres)
    dists.fill_diagonal_(float("inf"))
    expected = dists.argsort(dim=1)[:, :5]
    assert torch.equal(head.train_neighbours.sort(1).values, expected.sort(1).values)
    assert int(head.refreshed_at) == 0
    # a query placed on centre 7 is classified from its 5 nearest centres, itself included
    scores = head.query_log_scores(centres[7:8])
    manual = class_log_scores(centres[7:8], centres, labels, head.log_weights, torch.cdist(centres[7:8], centres)
                              .argsort(1)[:, :5], head.sigma, 3)
    torch.testing.assert_close(scores, manual)


def test_neighbours_clip_to_small_bank_and_sigma_learnable():
    head = NNGKHead(4, 3, 2, neighbours=200, sigma=10.0, learnable_sigma=True)
    head.refresh(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), epoch=0)
    assert head.train_neighbours.shape == (4, 3)
    assert (head.train_neighbours != torch.arange(4)[:, None]).all()
    assert head.sigma.item() == pytest.approx(10.0)
    z, rows = torch.randn(2, 3, requires_grad=True), torch.tensor([0, 1])
    expected = loop_class_log_scores(z, head.centres, head.centre_labels, head.log_weights, head.train_neighbours[rows],
                                     head.sigma, 2)
    assert_same_scores_and_gradients(head.train_log_scores(z, rows), expected, rows, (z, head.log_weights,
                                                                                      head.log_sigma))


def test_centres_that_require_gradients_are_refused():
    """The bank is a constant; a gradient silently missing for it would be wrong, so it is an error."""
    z, centres, labels, w, nbr, sigma, c = random_problem(0)
    with pytest.raises(ValueError, match="centres are constants"):
        class_log_scores(z, centres.requires_grad_(), labels, w, nbr, sigma, c)


def test_bank_is_refreshed_every_update_interval_epochs():
    """docs/methods.md, NNGK: the centres are re-embedded at epochs 0, k, 2k, ... and stay as they were in between; a
    reset bank (a new noisy student) is rebuilt at the next epoch, and the schedule counts from there."""
    m, g = tiny_method("nngk", 12, 3, update_interval=3)
    m.on_epoch_start(0)
    first = m.head.centres.clone()
    torch.testing.assert_close(first, m.embed_all(m.data.labeled))
    with torch.no_grad():
        m.model.projection.weight.add_(torch.randn(m.model.projection.weight.shape, generator=g))
    moved = m.embed_all(m.data.labeled)
    assert not torch.allclose(moved, first)
    for epoch in (1, 2):
        m.on_epoch_start(epoch)
        assert torch.equal(m.head.centres, first) and int(m.head.refreshed_at) == 0
    m.on_epoch_start(3)
    torch.testing.assert_close(m.head.centres, moved)
    assert int(m.head.refreshed_at) == 3
    with torch.no_grad():
        m.model.projection.weight.mul_(-1)
    m.head.refreshed_at.fill_(-1)
    m.on_epoch_start(4)
    reset = m.embed_all(m.data.labeled)
    torch.testing.assert_close(m.head.centres, reset)
    with torch.no_grad():
        m.model.projection.weight.mul_(-1)
    for epoch in (5, 6):  # the schedule counts from the reset: next at 7
        m.on_epoch_start(epoch)
        assert torch.equal(m.head.centres, reset)
    m.on_epoch_start(7)
    assert int(m.head.refreshed_at) == 7


def test_evaluation_equals_a_per_image_reference_with_a_partial_last_batch():
    """Accuracy and NLL over every image, each classified on its own by the brute-force kernel classifier over the
    labelled images embedded by the current model; 13 and 7 images in batches of 5."""
    m, g = tiny_method("nngk", 12, 3, neighbours=5, sigma=0.7, eval_batch_size=5)
    m.on_epoch_start(0)
    m.head.log_weights.data.normal_(0, 0.3, generator=g)
    parts = [ImageSet(torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g),
                      torch.randint(0, 3, (n,), generator=g)) for n in (13, 7)]
    metrics = classifier_metrics(m, {"a": parts[0], "b": parts[1]})
    for name, part in zip("ab", parts):
        scores = torch.cat([kernel_scores_reference(m.head, m.embed_all(part.images[i:i + 1]))
                            for i in range(len(part))])
        assert metrics[f"{name}_accuracy"] == pytest.approx((scores.argmax(1) == part.labels).double().mean().item())
        assert metrics[f"{name}_loss"] == pytest.approx(F.cross_entropy(scores, part.labels).item(), rel=1e-5)


def test_scores_stay_float32_and_unchanged_under_autocast():
    """The kernel runs in float32 inside mixed precision (its exp and log-sum-exp would lose the classes far from
    the best in bfloat16), with the same values as outside it; so does the search for the neighbours."""
    g = torch.Generator().manual_seed(2)
    head = NNGKHead(2000, 64, 5, neighbours=200, sigma=0.3)
    head.refresh(F.normalize(torch.randn(2000, 64, generator=g), dim=1), torch.randint(0, 5, (2000,), generator=g), 0)
    z = F.normalize(torch.randn(8, 64, generator=g), dim=1)
    plain = head.train_log_scores(z, torch.arange(8)), head.query_log_scores(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head.train_log_scores(z, torch.arange(8)), head.query_log_scores(z)
    for a, b in zip(plain, mixed):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b)


def digits_16px(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` of scikit-learn's digits, sorted by class (as a folder's are), as uint8 (n, 1, 16, 16)
    images (each pixel doubled) and labels."""
    digits = load_digits()
    order = torch.tensor(digits.target[:n]).argsort(stable=True)
    images = torch.tensor(digits.images[:n] * 255 / 16, dtype=torch.uint8)[order, None]
    return images.repeat_interleave(2, 2).repeat_interleave(2, 3), torch.tensor(digits.target[:n])[order]


def test_bank_of_a_batchnorm_resnet_matches_its_training_mode_embeddings_and_nngk_learns():
    """Issue 15: the bank is embedded in eval mode, training queries in train mode. Eval mode normalises by running
    BatchNorm statistics that lag behind the weights (at initialisation they are 0 and 1: a ResNet's eval-mode
    features were 4x longer than its training-mode ones here), so with unnormalised features the queries were far
    from every centre: NNGK's training loss stayed at 2.0 and its accuracy at 55 % after 5 steps on 100 digits
    (ResNet-18, 512-d features, σ 10), against 0.28 and 100 % once the statistics are recomputed before the bank
    is embedded. With the whole set as one batch, training-mode embeddings equal the centres up to the unbiased
    variance of the running statistics; the statistics are recomputed in batches of 32 of the class-sorted images,
    which must each span the classes."""
    torch.manual_seed(0)
    images, labels = digits_16px(100)
    cfg = build_config(overrides={"method": "nngk", "backbone": "resnet18", "small_stem": False, "embedding_dim": 0,
                                  "l2_normalize": False, "sigma": 10, "augment": "none", "eval_batch_size": 32})
    data = TrainData(ImageSet(images, labels), ImageSet(images[:0], labels[:0]), 10, flip=False)
    method = NNGK(EmbeddingNet(cfg.model, 1, 16, *channel_stats(images)), data, cfg).train()
    method.on_epoch_start(0)
    batch = Batch(torch.arange(len(labels)), images=images, labels=labels)
    z = method.model(images.float() / 255)
    centres = method.head.centres
    assert ((z - centres).norm(dim=1) / centres.norm(dim=1)).max() < 0.5  # 3.0 with the old eval-mode bank
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
    for _ in range(5):
        loss, _ = method.nngk_loss(method.model(images.float() / 255), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    loss, accuracy = method.nngk_loss(method.model(images.float() / 255), batch)
    assert loss < 1.0 and accuracy > 0.9, (loss, accuracy)
