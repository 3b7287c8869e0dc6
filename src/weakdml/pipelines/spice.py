"""SPICE (Niu et al., IEEE TIP 2022) as a pipeline: pretrain (MoCo v2) → self (SPICE-Self heads on the frozen
backbone) → reliable (samples whose cluster their neighbourhood confirms) → semi (SPICE-Semi, FixMatch on them).

Every stage works on the images to cluster, the unlabelled part (``--labeled-fraction 0``: every training image),
and reads no label: ground truth, where a data set has it, is read only by ``ground_truth`` below, to score. With
``--pretrained RUN_DIR`` (e.g. a ``weakdml pretrain`` run) there is no pretraining stage: the backbone comes from that
run. ``--spice-until`` stops after a stage; a later command continues the run from there. Each stage's settings are
the run's, with the optimisation of the original for that stage (Adam 0.005 for the heads; SGD 0.03, momentum 0.9,
weight decay 5e-4, cosine per step for SPICE-Semi) and the network's pooled features as the embedding.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from weakdml.atomic import write_json_atomic
from weakdml.config import Config
from weakdml.data.prepare import PreparedData
from weakdml.engine import dist
from weakdml.engine.checkpoint import load_checkpoint, save_atomic
from weakdml.engine.stages import Stage, StageContext, StageResult, TrainStage
from weakdml.errors import UserError
from weakdml.evaluation.clustering import ari, clustering_accuracy, nmi
from weakdml.methods.moco import PRETRAIN_DEFAULTS, MoCoPretraining
from weakdml.methods.spice_self import SpiceSelf, num_clusters
from weakdml.methods.spice_semi import SpiceSemi
from weakdml.spice.reliable import ReliableSamples, reliable_samples

log = logging.getLogger("weakdml")
STAGES = ("pretrain", "self", "reliable", "semi")
CLUSTER_DEFAULTS = PRETRAIN_DEFAULTS | {"method": "spice", "labeled_fraction": 0}  # `weakdml cluster`'s, over train's


def ground_truth(data: PreparedData) -> torch.Tensor | None:
    """For scoring only: the true classes (N,) of the images clustered (-1 where unknown), None when none is known.
    The stages see these images with labels -1; the labels come back here from the data set itself."""
    truth = torch.cat([part.source.labels[part.rows] for part in data.unlabeled_parts])
    return truth if (truth >= 0).any() else None


def image_ids(data: PreparedData) -> list[str]:
    """The names of the images clustered, in their order: the data set's (file paths of a folder) or
    ``train/<index>``, then ``unlabeled/<index>`` for extra unlabelled images and ``test/<index>`` for the test
    images with ``--test-as-unlabeled``."""
    return [name for part in data.unlabeled_parts for name in part.ids()]


def cluster_scores(truth: torch.Tensor | None, clusters: torch.Tensor) -> dict[str, float]:
    """ACC (Hungarian), NMI and ARI of cluster assignments (N,) against the known part of ``truth``."""
    if truth is None:
        return {}
    known = truth >= 0
    y, c = truth[known].numpy(), clusters.cpu()[known].numpy()
    return {"cluster_accuracy": clustering_accuracy(y, c)[0], "nmi": nmi(y, c), "ari": ari(y, c)}


def refuse_labels(data: PreparedData) -> None:
    if len(data.train.labeled) or len(data.val):
        raise UserError("spice clusters without labels: give --labeled-fraction 0 (weakdml cluster does)")


class ClusterTrainStage(TrainStage):
    """A trained stage of SPICE: it refuses data with a labelled part, since every image is to be clustered."""

    def check(self, data: PreparedData) -> None:
        refuse_labels(data)
        num_clusters(self.cfg, data.train)
        super().check(data)


@dataclass
class ReliableStage:
    """The ``self`` stage's chosen head and frozen features select the reliable samples; writes ``reliable.pt``
    (indices into the images clustered, their clusters) and ``reliable.json`` (per cluster: images predicted,
    reliable, kept, the thresholds that selected them and the relaxation steps it took)."""

    name: str
    self_stage: TrainStage
    epochs: int = 0

    def check(self, data: PreparedData) -> None:
        refuse_labels(data)

    def run(self, ctx: StageContext, directory: Path, first_epoch: int, ordinal: int) -> StageResult:
        method = self.self_stage.build(ctx)
        assert isinstance(method, SpiceSelf)
        method.load_state_dict(load_checkpoint(ctx.artifacts[f"{self.self_stage.name}/weights"],
                                               map_location=ctx.device)["method"])
        features = method.embed_all(method.data.unlabeled)
        head, losses = method.choose_head(features)
        probabilities = method.all_logits(features)[head].softmax(1)
        s, n = method.cfg.spice, len(features)

        def select() -> ReliableSamples:  # on rank 0, sent to the others (on the CPU)
            try:
                chosen = reliable_samples(features, probabilities, torch.Generator().manual_seed(method.cfg.train.seed),
                                        min(s.spice_knn, n - 1), s.spice_ratio, s.spice_score,
                                        balance=s.spice_balance, relax_steps=s.spice_relax_steps,
                                        min_ratio=min(s.spice_min_ratio, s.spice_ratio),
                                        min_score=min(s.spice_min_score, s.spice_score))  # relaxing never raises
            except UserError as error:
                raise UserError(f"{error} (flags: --spice-min-ratio, --spice-min-score, --num-clusters, "
                                f"--spice-self-epochs; `weakdml reliable {directory.parent} --spice-min-score X "
                                f"--out NEW_DIR` tries other thresholds on this run's SPICE-Self)") from None
            return dataclasses.replace(chosen, indices=chosen.indices.cpu(), labels=chosen.labels.cpu())
        chosen = dist.computed_once(select)
        for c in chosen.clusters:
            if c.relaxations:
                log.warning(f"reliable samples: cluster {c.cluster} had none at the thresholds asked for; relaxed in "
                            f"{c.relaxations} step(s) to neighbour ratio {c.ratio:.2f} and score "
                            f"{c.score_threshold:.2f} ({c.reliable} of its {c.predicted} images)")
        log.info(f"reliable samples: {len(chosen.indices)} of {n} images (head {head}; per cluster "
                 f"{[c.kept for c in chosen.clusters]})")
        report: dict[str, Any] = {"head": head, "head_losses": losses.tolist(), "reliable": len(chosen.indices),
                                  "images": n, "clusters": [dataclasses.asdict(c) for c in chosen.clusters]}
        truth = ground_truth(ctx.data)
        if truth is not None:  # scoring only
            report["evaluation"] = dist.computed_once(lambda: reliable_evaluation(
                truth, probabilities.argmax(1), chosen.indices, chosen.labels))
            log.info(f"reliable samples (scored against the ground truth): {json.dumps(report['evaluation'])}")
        if dist.is_main():
            save_atomic({"indices": chosen.indices.cpu(), "labels": chosen.labels.cpu()}, directory / "reliable.pt")
            write_json_atomic(directory / "reliable.json", report)
        return StageResult({"reliable": directory / "reliable.pt", "report": directory / "reliable.json"})


def reliable_evaluation(truth: torch.Tensor, clusters: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor
                        ) -> dict[str, float]:
    """The chosen head's ACC/NMI/ARI on every image clustered and the precision of the reliable samples' clusters
    under the same cluster → class matching."""
    scores = cluster_scores(truth, clusters)
    known = truth >= 0
    _, mapping = clustering_accuracy(truth[known].numpy(), clusters.cpu()[known].numpy())
    mapped = torch.tensor([mapping.get(int(c), -2) for c in labels.cpu()], dtype=torch.long)
    kept = truth[indices.cpu()] >= 0
    precision = (mapped[kept] == truth[indices.cpu()][kept]).float().mean().item() if kept.any() else float("nan")
    return scores | {"reliable_precision": precision}


def _stage_config(cfg: Config, model: dict[str, Any], optim: dict[str, Any], batch_size: int | None = None
                  ) -> Config:
    """``cfg`` with a stage's network, optimiser and batch size (SPICE-Self sizes its big batches itself)."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model),
                               optim=dataclasses.replace(cfg.optim, **optim),
                               train=dataclasses.replace(cfg.train, batch_size=batch_size or cfg.train.batch_size))


def spice(cfg: Config) -> tuple[list[Stage], bool]:
    s, m = cfg.spice, cfg.model
    if s.spice_until == "pretrain" and m.pretrained:
        raise UserError("--pretrained gives the backbone, so there is no pretraining stage: stop at another stage")
    features = {"embedding_dim": 0, "l2_normalize": True}  # pooled, L2-normalised backbone features
    stages: list[Stage] = []
    init = None
    if not m.pretrained:
        pretraining = _stage_config(cfg, features, {})
        stages.append(ClusterTrainStage("pretrain", MoCoPretraining, pretraining, cfg.train.epochs))
        init = "pretrain/weights"
    heads = _stage_config(cfg, features, {"optimizer": "adam", "lr": s.spice_self_lr, "weight_decay": 0.0,
                                          "schedule": "none", "warmup_epochs": 0.0})
    self_stage = ClusterTrainStage("self", SpiceSelf, heads, s.spice_self_epochs, init)
    from_pretrained = s.spice_semi_init == "pretrain"
    semi = _stage_config(cfg, {"embedding_dim": 0, "l2_normalize": False, "pretrained": m.pretrained if from_pretrained
                               else None},
                         {"optimizer": "sgd", "lr": s.spice_semi_lr, "momentum": 0.9, "weight_decay": 5e-4,
                          "schedule": "cosine", "schedule_unit": "step", "warmup_epochs": 0.0}, s.spice_semi_batch)
    stages += [self_stage, ReliableStage("reliable", self_stage),
               ClusterTrainStage("semi", SpiceSemi, semi, s.spice_semi_epochs, init if from_pretrained else None,
                          {"reliable": "reliable/reliable"})]
    last = next(i for i, stage in enumerate(stages) if stage.name == s.spice_until)
    return stages[:last + 1], True
