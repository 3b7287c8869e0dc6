"""Time of one training step of every registered method relative to ``cross-entropy``: same backbone (small-cnn,
64-d embedding), batch (128), images (random uint8, 1×28×28; 5,000 labelled in 32 classes, 10,000 unlabelled).

    python benchmarks/methods_step.py [--repeats 20] [--warmup 3] [--device auto] [--amp off[,bf16]]
                                      [--out benchmarks/results]

A step is what the trainer does: ``training_step``, zero_grad, backward, optimiser step (batches are drawn before
timing; ``on_epoch_start`` has run, so banks exist). Methods are timed round-robin, one step each per round, so a
shared machine's load falls on all of them alike; the median over rounds is reported. A method with several stages
(Noisy Student) is also timed as its student (labelled plus pseudo-labelled batches). Images per step
counts the rows that went through the network (mixup variants embed the clean and the mixed batch).
``--amp`` times every method under each of the given mixed-precision modes (as ``weakdml train --amp``: the step
inside autocast), interleaved, and compares each with the same method in float32 when ``off`` is among them.
Target: every MbDML variant ≤ 1.3× the cross-entropy step. Writes methods_step.json and methods_step.md.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field

import torch
from device_clock import clock, machine, result_name
from results_io import save

from weakdml.config import Config, all_fields, build_config
from weakdml.data.types import ImageSet, TrainData
from weakdml.engine.environment import resolve_device
from weakdml.engine.optim import build_optimizer
from weakdml.engine.pipeline import method_names
from weakdml.engine.trainer import amp_dtype, load_batch
from weakdml.methods import METHODS, Batch, Method
from weakdml.methods.noisy_student import NoisyStudent, NoisyStudentTeacher
from weakdml.models.embedding import EmbeddingNet
from weakdml.pipelines.noisy_student import pseudo_labels

TARGET = 1.3
BATCH = 128
SETTINGS = {"batch_size": BATCH, "backbone": "small-cnn", "embedding_dim": 64, "augment": "weak", "amp": False,
            "nst_threshold": 0.0}  # every unlabelled image pseudo-labelled, so students use the unlabelled part
PER_METHOD = {"moco": {"embedding_dim": 0}}  # MoCo trains the pooled features (weakdml pretrain's setting)
NOT_TIMED = ("spice",)  # a pipeline of stages: benchmarks/spice_stages.py times them


def random_data(labeled: int = 5000, unlabeled: int = 10_000, classes: int = 32) -> TrainData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (labeled + unlabeled, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.arange(labeled) % classes
    return TrainData(ImageSet(images[:labeled], labels), ImageSet(images[labeled:], torch.full((unlabeled,), -1)),
                     classes, flip=False)


@dataclass
class Timed:
    """One method (in one stage), its optimiser, pre-drawn batches and the step times measured so far."""

    name: str
    method: Method
    optimizer: torch.optim.Optimizer
    batches: list[Batch]
    images_per_step: int = 0
    seconds: list[float] = field(default_factory=list)
    amp: str = "off"  # the --amp mode it is timed in
    amp_dtype: torch.dtype | None = None

    def step(self, batch: Batch) -> None:
        with torch.autocast(self.method.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            loss = self.method.training_step(batch)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def draw_batches(method: Method, n: int) -> list[Batch]:
    out: list[Batch] = []
    epoch = 0
    while len(out) < n:
        method.seed_epoch(epoch)
        out += [load_batch(method, batch) for batch in list(method.batches(epoch))[:n - len(out)]]
        epoch += 1
    return out


def ready(method: Method, name: str, cfg: Config, n: int) -> Timed:
    method.seed_epoch(0)
    method.on_epoch_start(0)
    return Timed(name, method, build_optimizer(method.parameter_groups(), cfg.optim), draw_batches(method, n))


def prepare(name: str, data: TrainData, device: torch.device, n: int, batch_size: int = BATCH) -> list[Timed]:
    """The method ready to step; for Noisy Student also its student (labelled plus pseudo-labelled batches)."""
    known = all_fields()
    settings = {"method": name, **SETTINGS, **PER_METHOD.get(name, {}), "batch_size": batch_size}
    cfg = build_config(overrides={k: v for k, v in settings.items() if k in known})
    torch.manual_seed(0)
    method_class = NoisyStudentTeacher if name == "mbdml4" else METHODS[name]
    method = method_class(EmbeddingNet(cfg.model, 1, 28), data, cfg).to(device).train()
    timed = [ready(method, name, cfg, n)]
    if name == "mbdml4":
        torch.manual_seed(0)
        student = NoisyStudent(EmbeddingNet(cfg.model, 1, 28), data, cfg, pseudo_labels(method, cfg.nst)).to(device)
        student.start_from(method.state_dict())
        timed.append(ready(student.train(), f"{name} (student)", cfg, n))
    return timed


def count_images(t: Timed) -> int:
    """Rows through the trained backbone in one step (counted by a forward hook; MoCo's momentum encoder is a copy
    of it, so its keys are not counted)."""
    rows = []
    hook = t.method.model.backbone.register_forward_hook(lambda _m, inputs, _out: rows.append(inputs[0].shape[0]))
    t.step(t.batches[0])
    hook.remove()
    return sum(rows)


def measure(device: torch.device, repeats: int, warmup: int, amps: list[str]) -> list[dict]:
    data = random_data()
    names = [name for name in method_names() if name not in NOT_TIMED]
    runs = []
    for amp in amps:
        for name in names:
            for t in prepare(name, data, device, warmup + repeats):
                t.amp, t.amp_dtype = amp, amp_dtype(amp, device)
                runs.append(t)
    for t in runs:
        t.images_per_step = count_images(t)
    for r in range(warmup + repeats):
        for t in runs:
            start = clock(device)
            t.step(t.batches[r])
            if r >= warmup:
                t.seconds.append(clock(device) - start)
    ms = {(t.name, t.amp): 1000 * statistics.median(t.seconds) for t in runs}
    rows = []
    for t in runs:
        base = next(b for b in runs if b.name == "cross-entropy" and b.amp == t.amp)
        ratio = ms[t.name, t.amp] / ms[base.name, t.amp]
        per_image = ratio * base.images_per_step / t.images_per_step
        float32 = ms.get((t.name, "off"))
        rows.append({"method": t.name, "amp": t.amp, "images_per_step": t.images_per_step,
                     "ms_per_step": ms[t.name, t.amp], "vs_cross_entropy": ratio,
                     "per_image_vs_cross_entropy": per_image,
                     "vs_float32": ms[t.name, t.amp] / float32 if float32 else None,
                     "meets_target": ratio <= TARGET if t.name.startswith("mbdml") else None})
    return rows


def table(rows: list[dict]) -> str:
    lines = [("| method | amp | images / step | ms / step | × cross-entropy step | × per image | × float32 | "
             "target ≤ 1.3× |"), "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = {None: "", True: "yes", False: "no"}[r["meets_target"]]
        float32 = "" if r["vs_float32"] is None else f"{r['vs_float32']:.2f}×"
        lines.append(f"| {r['method']} | {r['amp']} | {r['images_per_step']} | {r['ms_per_step']:.1f} | "
                     f"{r['vs_cross_entropy']:.2f}× | {r['per_image_vs_cross_entropy']:.2f}× | {float32} | "
                     f"{verdict} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="off", help="comma-separated --amp modes to time each method in")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--note", default="", help="a line to keep with the results (e.g. that the machine was busy)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    amps = args.amp.split(",")
    rows = measure(device, args.repeats, args.warmup, amps)
    setting = (f"small-cnn, 64-d, batch {BATCH}, 1×28×28 random images (5,000 labelled, 32 classes; 10,000 "
               f"unlabelled), {device}, {torch.get_num_threads()} threads, torch {torch.__version__}; median of "
               f"{args.repeats} steps after {args.warmup} warm-up, methods interleaved; --amp {args.amp}")
    target = f"Target: every MbDML variant ≤ {TARGET}× the cross-entropy step."
    text = f"{setting}\n\n{table(rows)}\n\n{target}\n" + (f"\n{args.note}\n" if args.note else "")
    result = {"machine": machine(device), "device": str(device),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "batch": BATCH,
              "repeats": args.repeats, "warmup": args.warmup, "amp": amps, "target": TARGET, "note": args.note,
              "rows": rows}
    save(args.out, result_name("methods_step", device) + "".join(f"-{a}" for a in amps if a != "off"), result, text)


if __name__ == "__main__":
    main()
