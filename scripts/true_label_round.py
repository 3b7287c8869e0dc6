"""Diagnostic for docs/results.md ("What limits the student"); it READS THE TRUE LABELS of the unlabelled part,
which weakdml itself never does, so it lives here and not in the library.

Trains round R of a finished MbDML4 teacher-student run again, into a new run that starts from the source run's
stages up to round R's pseudo-labels, with the unlabelled images labelled in one of three ways:
  pseudo    the teacher's pseudo-labels, as weakdml trains (the control);
  selected  the teacher's selection, each image with its true label;
  all       every unlabelled image with its true label.

    python scripts/true_label_round.py RUN_DIR ROUND {pseudo,selected,all} OUT_DIR
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from weakdml.data.prepare import load_bundle
from weakdml.data.splits import Split
from weakdml.engine import run as run_module
from weakdml.engine.checkpoint import load_checkpoint, save_atomic
from weakdml.engine.pipeline import pipeline_for


def main(run: Path, round_: int, labels: str, out: Path) -> None:
    label_stage = 2 * round_ - 1  # teacher, label-1, student-1, label-2, ...
    cfg, out = run_module.train_from_stages(run, label_stage + 1, {"out": str(out), "nst_rounds": round_,
                                                                   "progress": "off"}, {"nst_rounds"})
    truth = load_bundle(cfg).train.labels[torch.tensor(Split.load(run / "split.json").unlabeled)]
    path = pipeline_for(cfg).directory(out, label_stage) / "pseudo_labels.pt"
    pseudo = load_checkpoint(path)
    wrong = (pseudo["targets"].argmax(1) != truth)[pseudo["mask"]].float().mean().item()
    print(f"round {round_}: the teacher selected {int(pseudo['mask'].sum())} images, {wrong:.4f} wrongly labelled",
          flush=True)
    if labels != "pseudo":
        pseudo["targets"] = F.one_hot(truth, pseudo["targets"].shape[1]).float()
        if labels == "all":
            pseudo["mask"] = torch.ones_like(pseudo["mask"])
        save_atomic(pseudo, path)
    metrics = run_module.resume(out).metrics
    print(labels, {key: metrics[key] for key in ("test_accuracy", "val_accuracy", "best_epoch")}, flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[3] not in ("pseudo", "selected", "all"):
        sys.exit(__doc__)
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
