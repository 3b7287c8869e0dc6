"""Diagnostic for docs/results.md ("SPICE on all 70,000 Fashion-MNIST images"): how well does the MoCo stage of a
clustering run separate the Fashion-MNIST classes? It READS THE TRUE LABELS, for scoring only, so it lives here.

Embeds the 60,000 training and 10,000 test images with the stage's small-cnn backbone (pooled, L2-normalised, as the
later stages see them) and prints the weighted kNN test accuracy (k 200, T 0.1, the training images as references),
its recall per class, and k-means (10 clusters, 3 starts) on all 70,000 embeddings scored by Hungarian ACC and NMI.

    python scripts/moco_probe.py RUN_DIR/00-pretrain/best.pt
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from weakdml.config import DataConfig
from weakdml.data import idx_sets
from weakdml.evaluation.clustering import clustering_accuracy
from weakdml.evaluation.weighted_knn import weighted_knn_scores
from weakdml.models.backbones import SmallCNN


@torch.no_grad()
def embed(network: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor, images) -> torch.Tensor:
    out = []
    for start in range(0, len(images), 1000):
        x = images.load(torch.arange(start, min(start + 1000, len(images)))).float() / 255
        out.append(F.normalize(network((x - mean) / std), dim=1))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="best.pt of a Fashion-MNIST small-cnn MoCo stage")
    args = parser.parse_args()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["method"]
    network = SmallCNN(1, 1.0)
    network.load_state_dict({k.removeprefix("model.backbone."): v for k, v in state.items()
                             if k.startswith("model.backbone.")})
    network.eval()
    bundle = idx_sets.load("fashion-mnist", DataConfig(dataset="fashion-mnist"))
    train, test = (embed(network, state["model.mean"], state["model.std"], s) for s in (bundle.train, bundle.test))
    y_train, y_test = bundle.train.labels, bundle.test.labels
    predicted = weighted_knn_scores(test, train, y_train, k=200, temperature=0.1, num_classes=10).argmax(1)
    print(f"weighted kNN test accuracy {float((predicted == y_test).float().mean()):.4f}")
    print("kNN recall per class", [round(float((predicted[y_test == c] == c).float().mean()), 3) for c in range(10)])
    everything, truth = torch.cat([train, test]).numpy(), torch.cat([y_train, y_test]).numpy()
    clusters = KMeans(10, n_init=3, random_state=0).fit_predict(everything)
    print(f"k-means ACC {clustering_accuracy(truth, clusters)[0]:.4f} "
          f"NMI {normalized_mutual_info_score(truth, clusters):.4f}")


if __name__ == "__main__":
    main()
