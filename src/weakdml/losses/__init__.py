"""Loss pieces usable in any training loop with pytorch-metric-learning: the IAA wrapper around a pair loss (with its
per-class statistics and neighbour correction), the MDR regulariser, and Multi-Similarity with the IAA paper's
settings."""

from weakdml.losses.class_statistics import ClassStatistics
from weakdml.losses.iaa import IAALoss, iaa_lambda, iaa_pairs
from weakdml.losses.mdr import MDRLoss
from weakdml.losses.multi_similarity import multi_similarity

__all__ = ["ClassStatistics", "IAALoss", "MDRLoss", "iaa_lambda", "iaa_pairs", "multi_similarity"]
