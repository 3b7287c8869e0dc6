"""``weakdml cluster`` and the SPICE stage commands on a run directory (``cluster-self``, ``reliable``,
``cluster-semi``): a run of the ``spice`` pipeline, created, continued to a stage, or resumed, and then its outputs for
people: ``predictions.csv`` (file, cluster, confidence[, label]), ``clusters.png`` (the most confident images of each
cluster) and ``cluster_metrics.json`` (its size, and ACC/NMI/ARI where the data set's ground truth exists — read
here, for scoring only). ``--labels FEW.csv`` (file, label for a few images) names the clusters by Hungarian matching
and reports how many of those images their cluster's name agrees with; the run keeps a copy (``labels.csv``) that
names the clusters of its later stages and of the runs continued from it with ``--out``.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from weakdml.atomic import atomic_writer, write_json_atomic
from weakdml.config import Config, build_config, same_setting
from weakdml.data.prepare import PreparedData
from weakdml.engine import dist, run
from weakdml.engine.pipeline import pipeline_for
from weakdml.engine.stages import DONE
from weakdml.errors import UserError
from weakdml.evaluation.clustering import clustering_accuracy
from weakdml.pipelines.spice import CLUSTER_DEFAULTS, cluster_scores, ground_truth, image_ids
from weakdml.plots.clusters import cluster_grid

log = logging.getLogger("weakdml")
STAGE_COMMANDS = {"pretrain": "cluster --spice-until pretrain --resume", "self": "cluster-self",
                  "reliable": "reliable", "semi": "cluster-semi"}
# The settings each stage after pretraining reads: a stage command given other values of its own or a later stage's
# settings starts a new run (--out) with the earlier stages of the given one.
STAGE_SETTINGS = {
    "self": {"num_clusters", "spice_heads", "spice_hidden", "spice_self_epochs", "spice_self_batch", "spice_self_lr",
             "double_softmax"},
    "reliable": {"spice_knn", "spice_ratio", "spice_score", "spice_balance", "spice_relax_steps", "spice_min_ratio",
                 "spice_min_score"},
    "semi": {"spice_semi_epochs", "spice_semi_init", "spice_semi_batch", "spice_semi_lr", "fixmatch_ratio",
             "fixmatch_threshold", "spice_ema"}}
# What a clustering run started from a pretraining run takes from it besides its data set: its network and seed; not
# how it labelled images (a clustering labels none).
TAKEN_FROM_PRETRAINING = ("backbone", "width", "grey_as_rgb", "small_stem", "input_norm", "seed")
LABELLING = ("labeled_fraction", "labels_per_class", "val_fraction", "val_classes", "split")
KEPT_LABELS = "labels.csv"  # the run's copy of the last --labels file given to it


@dataclass
class ClusterSummary:
    run_dir: Path
    metrics: dict[str, Any]


def cluster(cfg: Config, labels_file: Path | None = None, force: bool = False) -> ClusterSummary:
    """A new clustering run as configured (every stage up to ``--spice-until``), then its outputs; the labels file is
    checked against the images before any stage trains."""
    return outputs(run.train(cfg, force, labels_check(labels_file)).run_dir, labels_file)


def resume_cluster(run_dir: Path, overrides: dict[str, Any], labels_file: Path | None = None) -> ClusterSummary:
    return outputs(run.resume(run_dir, overrides, labels_check(labels_file)).run_dir, labels_file)


def run_stage(run_dir: Path, stage: str, overrides: dict[str, Any], labels_file: Path | None = None
              ) -> ClusterSummary:
    """Continue a clustering run to ``stage``, which needs the stage before it finished; with another ``--out`` a new
    run takes the run's stages before ``stage`` and may change the settings of ``stage`` and later ones (e.g. the
    reliable thresholds after a cluster had none). ``self`` on a pretraining run starts a new clustering run (in
    ``--out``) from that run's backbone, on its data."""
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a weakdml run directory (no config.yaml)")
    saved = build_config(run_dir / "config.yaml")
    if saved.train.method != "spice":
        if stage != "self":
            raise UserError(f"{run_dir} is a {saved.train.method} run, not a clustering one: start clustering from "
                            f"it with `weakdml cluster-self {run_dir}`")
        settings = saved.to_dict()
        taken = {k: v for k, v in settings["data"].items() if k not in LABELLING} | {
            k: v for section in ("model", "train") for k, v in settings[section].items() if k in TAKEN_FROM_PRETRAINING}
        cfg = build_config(overrides=CLUSTER_DEFAULTS | taken | {"pretrained": str(run_dir), "spice_until": "self"}
                           | overrides)
        return cluster(cfg, labels_file)
    stages = [s.name for s in pipeline_for(build_config(run_dir / "config.yaml", {"spice_until": "semi"})).stages]
    if stage not in stages:
        raise UserError(f"{run_dir} has no {stage} stage (its stages: {', '.join(stages)})")
    index = stages.index(stage)
    if index and not (run_dir / f"{index - 1:02d}-{stages[index - 1]}" / DONE).is_file():
        before = stages[index - 1]
        raise UserError(f"the {stage} stage needs the {before} stage, which {run_dir} has not finished: run "
                        f"`weakdml {STAGE_COMMANDS[before]} {run_dir}` first")
    overrides = overrides | {"spice_until": stage}
    later = set().union(*(STAGE_SETTINGS[s] for s in stages[index:])) | {"spice_until"}
    if overrides.get("out") and Path(overrides["out"]).resolve() != run_dir.resolve():
        _, branch = run.train_from_stages(run_dir, index, overrides, later)
        return resume_cluster(branch, {}, labels_file or kept_labels(run_dir))
    kept = saved.to_dict()["spice"]
    changed = [name for name, value in overrides.items() if name in later - {"spice_until"}
               and not same_setting(value, kept[name])]
    if changed:
        raise UserError(f"{run_dir} keeps its settings; to run the {stage} stage with other "
                        f"{', '.join('--' + name.replace('_', '-') for name in changed)}, give --out NEW_DIR: a new "
                        f"run that keeps {run_dir}'s finished stages before {stage}")
    return resume_cluster(run_dir, overrides, labels_file)


def outputs(run_dir: Path, labels_file: Path | None) -> ClusterSummary:
    """Predict every image clustered with the run's model and write what people read (see the module's text); a
    run stopped after pretraining has no clusters yet and gets none. Without a labels file, the run's copy of the last
    one given names the clusters."""
    cfg, data, method, _ = run.load_run(run_dir)
    metrics: dict[str, Any] = {"stage": cfg.spice.spice_until}
    if cfg.spice.spice_until == "pretrain":
        log.info(f"{run_dir}: pretrained; cluster with `weakdml cluster-self {run_dir}`")
        return ClusterSummary(run_dir, metrics)
    labels_file = labels_file or kept_labels(run_dir)
    probabilities = method.predict_all(data.train.unlabeled).exp().cpu()  # (N, C): log-softmax scores
    confidence, clusters = probabilities.max(1)
    ids = image_ids(data)
    sizes = torch.bincount(clusters, minlength=probabilities.shape[1])
    metrics |= {"images": len(ids), "cluster_sizes": sizes.tolist()}
    metrics |= dist.computed_once(lambda: cluster_scores(ground_truth(data), clusters))  # scoring only
    names: dict[int, str] = {}
    if labels_file is not None:
        names, agreement, labelled = name_clusters(labels_file, ids, clusters)
        metrics |= {"labels_agreement": agreement, "labelled_images": labelled, "cluster_names": names}
    if not dist.is_main():  # every process predicted its share; rank 0 writes
        return ClusterSummary(run_dir, metrics)
    rows = [[i, int(c), f"{float(p):.4f}", *([names.get(int(c), "")] if names else [])]
            for i, c, p in zip(ids, clusters, confidence)]
    if labels_file is not None and labels_file.resolve() != (run_dir / KEPT_LABELS).resolve():
        with atomic_writer(run_dir / KEPT_LABELS) as handle:
            handle.write(labels_file.read_text(encoding="utf-8"))
    with atomic_writer(run_dir / "predictions.csv") as handle:
        csv.writer(handle).writerows([["file", "cluster", "confidence", *(["label"] if names else [])], *rows])
    cluster_grid(data.train.unlabeled, clusters, confidence, probabilities.shape[1], run_dir / "clusters.png")
    write_json_atomic(run_dir / "cluster_metrics.json", metrics)
    return ClusterSummary(run_dir, metrics)


def kept_labels(run_dir: Path) -> Path | None:
    """The run's copy of the last labels file given to it, if any."""
    kept = run_dir / KEPT_LABELS
    if kept.is_file():
        log.info(f"naming the clusters from {kept} (the labels given to the run earlier; --labels gives others)")
        return kept
    return None


def read_labels(labels_file: Path) -> list[tuple[str, str]]:
    """The (file, label) rows of a CSV for a few images (a header row "file,label" is skipped), checked."""
    if not labels_file.is_file():
        raise UserError(f"labels file {labels_file} not found")
    with labels_file.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["file", "label"]:
        rows = rows[1:]
    if not rows:
        raise UserError(f"{labels_file} names no image: give rows of file,label")
    for number, row in enumerate(rows, 1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise UserError(f"{labels_file}, row {number}: give a file and a label, got {','.join(row)!r}")
    return [(row[0].strip(), row[1].strip()) for row in rows]


def labelled_images(labels_file: Path, ids: list[str]) -> tuple[list[str], list[int]]:
    """The labels of a labels file (``read_labels``) and the positions among ``ids`` of the files they label, each
    file matched by its path or its name."""
    where = {Path(name).name: i for i, name in enumerate(ids)} | {name: i for i, name in enumerate(ids)}
    rows = read_labels(labels_file)
    for number, (file, _) in enumerate(rows, 1):
        if file not in where:
            raise UserError(f"{labels_file}, row {number}: {file} is not among the images clustered")
    return [label for _, label in rows], [where[file] for file, _ in rows]


def labels_check(labels_file: Path | None) -> run.DataCheck | None:
    """The check that a labels file names images of the data clustered (the file itself is read at once)."""
    if labels_file is None:
        return None
    read_labels(labels_file)

    def check(data: PreparedData) -> None:
        labelled_images(labels_file, image_ids(data))

    return check


def name_clusters(labels_file: Path, ids: list[str], clusters: torch.Tensor) -> tuple[dict[int, str], float, int]:
    """Cluster names from a few labelled images (``labelled_images``): the Hungarian matching of clusters to labels
    that agrees with most of them; returns the names (of the clusters that hold such an image), the share of those
    images whose cluster is named by their own label, and their number."""
    labels, positions = labelled_images(labels_file, ids)
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(label) for label in labels])
    agreement, mapping = clustering_accuracy(y, clusters[torch.tensor(positions)])
    return {int(c): classes[k] for c, k in mapping.items()}, agreement, len(labels)
