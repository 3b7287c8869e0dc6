"""Training methods by name; a method made of several stages (mbdml4) also has its pipeline in
``weakdml.pipelines``, which says what its stages train."""

from __future__ import annotations

from weakdml.methods.base import Batch, Method, TrainData
from weakdml.methods.classifier import CrossEntropy, Mixup
from weakdml.methods.dml import Contrastive, MultiSimilarity, ProxyAnchor, SoftTriple, SupCon, Triplet
from weakdml.methods.mbdml import MbDML1, MbDML2, MbDML3
from weakdml.methods.moco import MoCoPretraining
from weakdml.methods.nngk import NNGK
from weakdml.methods.noisy_student import NoisyStudentTeacher
from weakdml.methods.spice_semi import SpiceSemi

METHODS: dict[str, type[Method]] = {
    "nngk": NNGK,
    "cross-entropy": CrossEntropy,
    "mixup": Mixup,
    "mbdml1": MbDML1,
    "mbdml2": MbDML2,
    "mbdml3": MbDML3,
    "mbdml4": NoisyStudentTeacher,  # its stages: weakdml.pipelines.noisy_student
    "ms": MultiSimilarity,
    "contrastive": Contrastive,
    "proxy-anchor": ProxyAnchor,
    "soft-triple": SoftTriple,
    "supcon": SupCon,
    "triplet": Triplet,
    "moco": MoCoPretraining,  # self-supervised pretraining (weakdml pretrain)
    "spice": SpiceSemi,  # clustering (weakdml cluster); its stages: weakdml.pipelines.spice
}

__all__ = ["METHODS", "Batch", "Method", "TrainData"]
