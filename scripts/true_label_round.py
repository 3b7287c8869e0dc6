"""Diagnostic for docs/results.md ("What limits the student"); it READS THE TRUE LABELS of the unlabelled part,
which weakdml itself never does, so it lives here and not in the library.

Trains round R of a finished MbDML4 teacher-student run again, from its round R-1 student and with its settings, into
a new folder, with the unlabelled images labelled in one of three ways:
  pseudo    the teacher's pseudo-labels, as weakdml trains (the control);
  selected  the teacher's selection, each image with its true label;
  all       every unlabelled image with its true label.

    python scripts/true_label_round.py RUN_DIR ROUND {pseudo,selected,all} OUT_DIR
"""

import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from weakdml.config import build_config
from weakdml.data.prepare import prepare_data
from weakdml.data.registry import load_dataset
from weakdml.data.splits import Split
from weakdml.engine.environment import resolve_device, seed_everything
from weakdml.engine.metrics_log import MetricsLog
from weakdml.engine.run import build_method, final_metrics
from weakdml.engine.trainer import Trainer


def main(run: Path, round_: int, labels: str, out: Path) -> None:
    cfg = build_config(run / "config.yaml", {"out": str(out), "progress": "off"})
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.train.seed, False)
    data = prepare_data(cfg, run / "split.json")
    truth = load_dataset(cfg.data).train.labels[torch.tensor(Split.load(run / "split.json").unlabeled)]
    method = build_method(cfg, data, resolve_device(cfg.train.device))
    trainer = Trainer(cfg, method, data.val, data.test, out)
    rows = [row for row in MetricsLog(run, tensorboard=False).rows() if row["stage"] < round_]
    for row in rows:  # the run up to the round, as if trained here
        trainer.log.append(row)
    for stage in range(round_):
        shutil.copy(run / f"best-stage{stage}.pt", out / f"best-stage{stage}.pt")
    best = max(rows, key=lambda row: (row["val_accuracy"], row["epoch"]))
    shutil.copy(run / f"best-stage{best['stage']}.pt", out / "best.pt")
    trainer.best = best["val_accuracy"]
    trainer.start_epoch = trainer.stage_starts[round_]

    pseudo_labelling = method.begin_stage

    def begin_stage(stage: int) -> None:
        pseudo_labelling(stage)
        wrong = (method.pseudo_targets.argmax(1) != truth)[method.pseudo_mask].float().mean().item()
        print(f"round {stage}: the teacher selected {int(method.pseudo_mask.sum())} images, {wrong:.4f} wrongly "
              f"labelled", flush=True)
        if labels != "pseudo":
            method.pseudo_targets.copy_(F.one_hot(truth, method.pseudo_targets.shape[1]).float())
            if labels == "all":
                method.pseudo_mask.fill_(True)

    method.begin_stage = begin_stage
    trainer.fit()
    metrics = final_metrics(method, data, out)
    print(labels, {key: metrics[key] for key in ("test_accuracy", "val_accuracy", "best_epoch")}, flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[3] not in ("pseudo", "selected", "all"):
        sys.exit(__doc__)
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
