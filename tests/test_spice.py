"""SPICE-Self's pseudo-labels, heads and head choice, and the reliable samples, each against a plain loop; the
empty-cluster cases (relaxation, reported per cluster, and the error that names the cluster)."""

import pytest
import torch
import torch.nn.functional as F

from weakdml.errors import UserError
from weakdml.spice.heads import ClusteringHeads, head_losses, select_head
from weakdml.spice.pseudo_labels import prototype_pseudo_labels
from weakdml.spice.reliable import neighbour_agreement, reliable_samples


def _scores_and_features(h=3, n=103, c=4, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(h, n, c, generator=g).softmax(-1)
    return scores, F.normalize(torch.randn(n, d, generator=g), dim=1)


def test_prototype_pseudo_labels_equal_a_loop_over_heads_and_clusters():
    scores, features = _scores_and_features()
    h, n, c = scores.shape
    result = prototype_pseudo_labels(scores, features, center_ratio=0.5)
    per_cluster = n // c  # 25: prototypes from the 12 most confident, the 25 nearest labelled
    assert result.indices.shape == result.labels.shape == (h, c * per_cluster)
    for head in range(h):
        for cluster in range(c):
            order = sorted(range(n), key=lambda i: -scores[head, i, cluster].item())
            prototype = sum(features[i] for i in order[:12]) / 12
            nearest = sorted(range(n), key=lambda i: -(features[i] @ prototype).item())[:per_cluster]
            span = slice(cluster * per_cluster, (cluster + 1) * per_cluster)
            assert sorted(result.indices[head, span].tolist()) == sorted(nearest)  # a set: order is not kept
            assert (result.labels[head, span] == cluster).all()


def test_pseudo_label_counts_follow_the_ratios_and_bad_sizes_fail():
    scores, features = _scores_and_features(n=40, c=4)
    assert prototype_pseudo_labels(scores, features, select_ratio=0.5).indices.shape == (3, 4 * 5)
    with pytest.raises(UserError, match="at least 4 images"):
        prototype_pseudo_labels(scores[:, :3], features[:3])
    with pytest.raises(UserError, match="40 images but there are 39"):
        prototype_pseudo_labels(scores, features[:39])


def test_heads_losses_and_selection():
    heads = ClusteringHeads(8, num_clusters=4, num_heads=3, hidden=16)
    logits = heads(torch.randn(5, 8))
    assert logits.shape == (3, 5, 4)
    assert torch.allclose(heads.probabilities(torch.zeros(2, 8)).sum(-1), torch.ones(3, 2))
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(3, 6, 4, generator=g) * 3, torch.randint(0, 4, (3, 6), generator=g)
    for double_softmax in (True, False):
        losses = head_losses(logits, targets, double_softmax)
        for h in range(3):
            loop = 0.0
            for i in range(6):
                z = logits[h, i].softmax(0) if double_softmax else logits[h, i]
                loop += (torch.logsumexp(z, 0) - z[targets[h, i]]).item() / 6
            assert losses[h].item() == pytest.approx(loop, rel=1e-5)
    # head 1 agrees with its pseudo-labels, the others do not: it is chosen without any ground truth
    n, c = 12, 3
    labels = torch.arange(n) % c
    logits = torch.randn(4, n, c, generator=g)
    logits[1] = 10 * F.one_hot(labels, c).float()
    indices = torch.arange(n).expand(4, n)
    head, losses = select_head(logits, indices, labels.expand(4, n))
    assert head == 1 and losses.shape == (4,) and losses.argmin() == 1


def _blobs(seed=0, per=30):
    """Three well-separated blobs of ``per`` points (N = 3·per, D = 2), predictions = blob, confident."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    predicted = torch.arange(3).repeat_interleave(per)
    features = centres[predicted] + torch.randn(3 * per, 2, generator=g)
    probabilities = torch.full((3 * per, 3), 0.0025)
    probabilities[torch.arange(3 * per), predicted] = 0.995
    return features, probabilities, predicted


def _reference_reliable(features, probabilities, k, ratio, score):
    """Plain loops: distances to every other point, the k nearest, their share in the point's cluster."""
    n = len(features)
    predicted = probabilities.argmax(1)
    out = []
    for i in range(n):
        others = sorted((j for j in range(n) if j != i), key=lambda j: ((features[i] - features[j]) ** 2).sum().item())
        size = sum(int(predicted[j] == predicted[i]) for j in range(n))
        counted = max(1, min(k, size - 1))  # a cluster smaller than k + 1 counts its size - 1 nearest
        share = sum(int(predicted[j] == predicted[i]) for j in others[:counted]) / counted
        if share >= ratio and probabilities[i].max() > score:
            out.append(i)
    return out


def test_reliable_samples_equal_a_loop():
    features, probabilities, _predicted = _blobs()
    g = torch.Generator().manual_seed(1)
    flipped = torch.randperm(90, generator=g)[:12]  # wrong predictions inside other blobs, and less confidence
    probabilities[flipped] = probabilities[flipped].roll(1, dims=1)
    probabilities[torch.randperm(90, generator=g)[:10]] = torch.tensor([0.9, 0.05, 0.05])
    expected = _reference_reliable(features, probabilities, k=10, ratio=0.8, score=0.99)
    result = reliable_samples(features, probabilities, torch.Generator(), k=10, ratio=0.8, balance=False)
    assert sorted(result.indices.tolist()) == expected
    assert torch.equal(result.labels, probabilities.argmax(1)[result.indices])
    assert all(r.relaxations == 0 and r.kept == r.reliable for r in result.clusters)
    assert [r.predicted for r in result.clusters] == torch.bincount(probabilities.argmax(1), minlength=3).tolist()
    balanced = reliable_samples(features, probabilities, torch.Generator().manual_seed(5), k=10, ratio=0.8)
    smallest = min(r.reliable for r in result.clusters)
    assert [r.kept for r in balanced.clusters] == [smallest] * 3
    assert set(balanced.indices.tolist()) <= set(expected)
    again = reliable_samples(features, probabilities, torch.Generator().manual_seed(5), k=10, ratio=0.8)
    assert torch.equal(balanced.indices, again.indices)


def test_a_cluster_smaller_than_the_neighbourhood_counts_only_as_many_neighbours_as_it_can_hold():
    features, probabilities, _ = _blobs()  # three clusters of 30 images, fewer than k + 1
    expected = _reference_reliable(features, probabilities, k=40, ratio=0.9, score=0.99)
    result = reliable_samples(features, probabilities, torch.Generator(), k=40, ratio=0.9, balance=False,
                              relax_steps=0)
    assert sorted(result.indices.tolist()) == expected
    assert min(c.reliable for c in result.clusters) >= 29  # of 30 each; a fixed k of 40 admits none: 29 / 40 < 0.9


def test_neighbour_agreement_excludes_the_image_itself():
    features = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    agreement = neighbour_agreement(features, torch.tensor([0, 1, 1, 1]), k=1)
    assert agreement.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_an_empty_cluster_relaxes_its_thresholds_and_reports_it():
    features, probabilities, _ = _blobs()
    probabilities[30:60] = torch.tensor([0.1, 0.8, 0.1])  # cluster 1: consistent but never above 0.99
    result = reliable_samples(features, probabilities, torch.Generator(), k=10, ratio=0.9, score_threshold=0.99,
                              relax_steps=5, min_score=0.5)
    one = result.clusters[1]
    assert one.relaxations == 2 and one.score_threshold == pytest.approx(0.99 - 2 * 0.098)  # 0.794 < 0.8
    assert one.ratio == pytest.approx(0.9 - 2 * 0.08)
    assert result.clusters[0].relaxations == result.clusters[2].relaxations == 0
    assert (result.labels == 1).sum() == one.kept > 0
    with pytest.raises(UserError, match="cluster 1 has no reliable sample .* confident a score of 0.80"):
        reliable_samples(features, probabilities, torch.Generator(), k=10, relax_steps=0)
    with pytest.raises(UserError, match="cluster 1 has no reliable sample at neighbour ratio 0.50 and score 0.85"):
        reliable_samples(features, probabilities, torch.Generator(), k=10, min_score=0.85)


def test_a_cluster_nobody_is_predicted_in_fails_clearly():
    features, probabilities, _ = _blobs()
    probabilities = torch.cat([probabilities, torch.zeros(90, 1)], 1)  # a fourth cluster, never predicted
    with pytest.raises(UserError, match="no image is predicted in cluster 3"):
        reliable_samples(features, probabilities, torch.Generator(), k=10)
