"""MoCo v2 pieces against plain loops (loss, queue, momentum update, shuffle-BN, weighted kNN), and a short
pretraining on scikit-learn's digits that beats random weights in weighted-kNN accuracy."""

import collections
import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from weakdml.data.augment_contrastive import aug_plus
from weakdml.errors import UserError
from weakdml.evaluation.weighted_knn import weighted_knn_predict
from weakdml.models.backbones import SmallCNN
from weakdml.selfsup.moco import MoCo, MoCoQueue, ProjectionHead, moco_loss, momentum_update
from weakdml.selfsup.shuffle_bn import shuffle_bn_forward


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_moco_loss_equals_a_loop():
    q, k, queue, t = _unit(5, 8, seed=1), _unit(5, 8, seed=2), _unit(7, 8, seed=3), 0.2
    total = 0.0
    for i in range(5):
        logits = [float(q[i] @ k[i]) / t] + [float(q[i] @ queue[j]) / t for j in range(7)]
        total += -logits[0] + torch.logsumexp(torch.tensor(logits), 0).item()
    assert moco_loss(q, k, queue, t).item() == pytest.approx(total / 5, rel=1e-5)


@pytest.mark.parametrize("temperature", [0.2, 0.01])
def test_moco_loss_gradient_equals_autograd_through_cross_entropy(temperature):
    """The closed-form gradient against autograd through the plain logits; at T 0.01 the logits reach 100, where an
    unshifted exp would overflow float32."""
    q, k, queue = _unit(6, 8, seed=1), _unit(6, 8, seed=2), _unit(50, 8, seed=3)
    q[0] = k[0]  # one query on its positive: the largest logit of its row
    queue[7] = q[1]  # one on a negative
    mine, plain = q.clone().requires_grad_(), q.clone().requires_grad_()
    loss = moco_loss(mine, k, queue, temperature)
    logits = torch.cat([(plain * k).sum(1, keepdim=True), plain @ queue.T], 1) / temperature
    reference = F.cross_entropy(logits, torch.zeros(6, dtype=torch.long))
    (3 * loss).backward()  # an upstream gradient other than 1
    (3 * reference).backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert torch.allclose(mine.grad, plain.grad, rtol=1e-4, atol=1e-6)


def test_moco_loss_sends_gradients_to_the_queries_only():
    q, k = _unit(4, 6, seed=1).requires_grad_(), _unit(4, 6, seed=2).requires_grad_()
    moco_loss(q, k, _unit(3, 6, seed=3)).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0 and k.grad is None


def test_queue_is_a_fifo():
    queue = MoCoQueue(dim=3, size=5, generator=torch.Generator().manual_seed(0))
    reference = collections.deque(([row.tolist(), -1] for row in queue.keys), maxlen=5)  # oldest first
    assert torch.allclose(queue.keys.norm(dim=1), torch.ones(5))
    g = torch.Generator().manual_seed(1)
    for step, batch in enumerate([2, 2, 3, 7, 1]):  # wraps around, and one batch larger than the queue
        keys = torch.randn(batch, 3, generator=g)
        labels = torch.arange(batch) + 10 * step if step % 2 else None
        queue.enqueue(keys, labels)
        reference.extend([row.tolist(), -1 if labels is None else int(y)] for row, y in
                         zip(keys, labels if labels is not None else keys[:, 0]))
        stored = sorted(zip(queue.keys.tolist(), queue.labels.tolist()))
        assert stored == sorted((k, y) for k, y in reference)
    state = queue.state_dict()
    assert set(state) == {"keys", "labels", "pointer"}  # resumable from a checkpoint
    with pytest.raises(UserError, match="at least one key"):
        MoCoQueue(3, 0)


def test_momentum_update_equals_a_loop():
    query, key = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    key[1].running_mean.fill_(0.5)
    before = {n: p.clone() for n, p in key.named_parameters()}
    momentum_update(query, key, 0.9)
    for name, q in query.named_parameters():
        torch.testing.assert_close(dict(key.named_parameters())[name], 0.9 * before[name] + 0.1 * q)
    assert torch.equal(key[1].running_mean, torch.full((3,), 0.5))  # buffers untouched


def test_shuffle_bn_equals_each_group_through_the_encoder():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    reference = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    reference.load_state_dict(encoder.state_dict())
    images = torch.randn(10, 2, 5, 5)
    out = shuffle_bn_forward(encoder, images, 3, torch.Generator().manual_seed(4))
    permutation = torch.randperm(10, generator=torch.Generator().manual_seed(4))
    for group in permutation.tensor_split(3):  # sizes 4, 3, 3
        torch.testing.assert_close(out[group], reference(images[group]))
    torch.testing.assert_close(encoder[1].running_mean, reference[1].running_mean)
    assert not torch.allclose(out, reference(images))  # whole-batch statistics differ
    with pytest.raises(UserError, match="groups"):
        shuffle_bn_forward(encoder, images, 11, torch.Generator())


def test_weighted_knn_equals_a_loop():
    g = torch.Generator().manual_seed(0)
    bank, labels, queries = torch.randn(40, 6, generator=g), torch.randint(0, 4, (40,), generator=g), torch.randn(9, 6)
    k, t = 7, 0.1
    predictions = weighted_knn_predict(queries, bank, labels, k, t, num_classes=5, chunk_size=4)
    b = F.normalize(bank, dim=1)
    for i, q in enumerate(F.normalize(queries, dim=1)):
        similarity = [float(q @ row) for row in b]
        nearest = sorted(range(40), key=lambda j: -similarity[j])[:k]
        scores = [sum(math.exp(similarity[j] / t) for j in nearest if labels[j] == c) for c in range(5)]
        assert predictions[i].item() == max(range(5), key=lambda c: scores[c])


def test_projection_head_shapes():
    features = torch.randn(3, 16)
    for mlp, layers in ((True, 3), (False, 1)):
        head = ProjectionHead(16, 128, mlp)
        out = head(features)
        assert out.shape == (3, 128) and torch.allclose(out.norm(dim=1), torch.ones(3)) and len(head.layers) == layers


@pytest.fixture
def one_thread():
    """Small convolutions on a loaded 2-core machine: one thread is ~10x faster than two that compete."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_short_pretraining_beats_random_weights(one_thread):
    """Digits (8×8, 1,797 images), a quarter-width small CNN, 150 steps of batch 128 (~20 s on 1 core): the
    weighted-kNN accuracy of the backbone's features (bank: 1,000 images, queries: the other 797) rises above that
    of the same network at its random initialisation (measured with generator seeds 0-3: 0.713 -> 0.774, 0.798,
    0.812, 0.789; after 60 steps the gain was -0.01 to +0.06, too close to chance for a test)."""
    digits = load_digits()
    images = (torch.from_numpy(digits.images)[:, None] * 255 / 16).round().to(torch.uint8)  # (1797, 1, 8, 8)
    labels = torch.from_numpy(digits.target)
    torch.manual_seed(0)
    backbone = SmallCNN(1, width=0.25)

    def knn_accuracy() -> float:
        backbone.eval()
        with torch.no_grad():
            features = backbone(images.float() / 255)
        backbone.train()
        predicted = weighted_knn_predict(features[1000:], features[:1000], labels[:1000], k=20, temperature=0.1)
        return (predicted == labels[1000:]).float().mean().item()

    random_accuracy = knn_accuracy()
    g = torch.Generator().manual_seed(0)
    model = MoCo(backbone, backbone.out_features, queue_size=256, momentum=0.9, shuffle_groups=4, generator=g)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(150):
        batch = images[torch.randint(0, len(images), (128,), generator=g)]
        loss = model(aug_plus(batch, g, crop_scale=(0.5, 1)), aug_plus(batch, g, crop_scale=(0.5, 1)), g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert not any(p.requires_grad for p in model.key_encoder.parameters())
    assert knn_accuracy() > random_accuracy + 0.04
