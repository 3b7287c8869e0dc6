"""The `weakdml` command: parses, validates, calls the library, and turns user errors into one clear line."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import os
import sys
import typing
from pathlib import Path
from typing import Any

from weakdml.config import SECTIONS, all_fields, build_config
from weakdml.engine import dist
from weakdml.errors import FailedOnAnotherRank, UserError

log = logging.getLogger("weakdml")


def _add_config_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...],
                      exclude: tuple[str, ...] = (), defaults: dict[str, Any] | None = None) -> None:
    """One flag per config field of the given sections (but ``exclude``); defaults stay None so only given flags
    override. The help shows the field's default, or the command's own where ``defaults`` has one."""
    from weakdml.engine.pipeline import GENERAL_SECTIONS, method_names, sections_of

    users = {name: sections_of(name) for name in method_names()}
    for section in sections:
        readers = [name for name, own in users.items() if section in own]
        title = f"{section} settings" + ("" if section in GENERAL_SECTIONS else f" ({', '.join(readers)})")
        group = parser.add_argument_group(title)
        for name, (sec, f, kind) in all_fields().items():
            if sec != section or name in exclude:
                continue
            flag = "--" + name.replace("_", "-")
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            default = (defaults or {}).get(name, default)
            help_text = f.metadata["help"]
            if name == "method":
                help_text += ": " + ", ".join(method_names())
            if "(default" not in help_text:  # some say it in their own words
                help_text += f" (default: {','.join(map(str, default)) or 'none'})" if isinstance(default, list) \
                    else f" (default: {default})"
            help_text = help_text.replace("%", "%%")  # argparse formats help with %
            base = {a for a in typing.get_args(kind) if a is not type(None)} or {kind}
            if base == {bool}:  # --x / --no-x
                group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
                continue
            choices = f.metadata.get("choices")
            metavar = "{" + ",".join(choices) + "}" if choices else "N,N" if typing.get_origin(kind) is list else {
                int: "N", float: "X"}.get(next(iter(base)), name.split("_")[-1].upper())
            group.add_argument(flag, default=None, metavar=metavar, help=help_text)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = all_fields()
    return {k: v for k, v in vars(args).items() if k in fields and v is not None}


def build_parser() -> argparse.ArgumentParser:
    from weakdml.methods.moco import PRETRAIN_DEFAULTS
    from weakdml.pipelines.spice import CLUSTER_DEFAULTS

    parser = argparse.ArgumentParser(prog="weakdml", description="Deep metric learning when labels are scarce.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("datasets", help="list known data sets, whether their files were found, how to get them")
    p.add_argument("--data-root", default=None, help="also look in this folder")

    p = sub.add_parser("split", help="write a seeded, stratified labelled/validation/unlabelled split")
    _add_config_flags(p, ("data",), exclude=("split", "augment"))
    p.add_argument("--seed", default=None, help="seed of the split (default: 0)")
    p.add_argument("--out", default=None, help="split file to write (default: split-<dataset>-s<seed>.json)")

    p = sub.add_parser("train", help="train a model; prints the test accuracy and the run directory")
    p.add_argument("--config", default=None, help="YAML file of settings (flags override it)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run, or give a finished mbdml4 run more --nst-rounds")
    p.add_argument("--from-teacher", default=None, metavar="RUN_DIR",
                   help="mbdml4: a new student run on RUN_DIR's finished teacher (only --nst-* settings may differ)")
    p.add_argument("--force", action="store_true",
                   help="write the run into an --out folder that holds other files (not a weakdml run's)")
    _add_config_flags(p, tuple(SECTIONS))

    p = sub.add_parser("pretrain", help="self-supervised pretraining of a backbone (MoCo v2) on every training image; "
                                        "other runs start from it with --pretrained RUN_DIR")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted pretraining run")
    p.add_argument("--force", action="store_true", help="write into an --out folder that holds other files")
    _add_config_flags(p, ("data", "model", "optim", "train", "moco"), defaults=PRETRAIN_DEFAULTS)

    p = sub.add_parser("cluster", help="cluster a folder of images (or a data set) without labels: SPICE's stages "
                                       "(pretrain, self, reliable, semi), resumable; writes predictions.csv and "
                                       "clusters.png")
    p.add_argument("folder", nargs="?", default=None, help="a flat folder of images (else --dataset NAME)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted clustering run")
    p.add_argument("--labels", default=None, metavar="FEW.csv",
                   help="file,label rows for a few images: names the clusters (Hungarian matching) and reports the "
                        "agreement")
    p.add_argument("--force", action="store_true", help="write into an --out folder that holds other files")
    _add_config_flags(p, ("data", "model", "optim", "train", "moco", "spice"), defaults=CLUSTER_DEFAULTS)
    stage_commands = (
        ("cluster-self", "self", ("SPICE-Self: clustering heads on the frozen backbone of RUN_DIR (a clustering "
                                  "run, or a pretraining run to start one from)")),
        ("reliable", "reliable", "select the reliable samples of RUN_DIR's SPICE-Self clustering"),
        ("cluster-semi", "semi", "SPICE-Semi: FixMatch on RUN_DIR's reliable samples"))
    for name, stage, what in stage_commands:
        p = sub.add_parser(name, help=what)
        p.set_defaults(stage=stage)
        p.add_argument("run_dir", metavar="RUN_DIR")
        p.add_argument("--labels", default=None, metavar="FEW.csv", help="name the clusters from a few labels")
        _add_config_flags(p, ("spice",), exclude=("spice_until",))
        for flag, help_text in (("--out", ("new run directory: cluster-self on a pretraining run, or this stage "
                                          "again with other settings, keeping RUN_DIR's earlier stages")),
                                ("--device", "auto, cpu, cuda, cuda:N or mps"), ("--progress", "auto, on or off")):
            p.add_argument(flag, default=None, help=help_text)

    p = sub.add_parser("embed", help="pooled, L2-normalised backbone features of every image, saved with the image "
                                     "ids (embeddings.npy, ids.txt)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (with config.yaml and best.pt)")
    p.add_argument("--dataset", default=None, help="embed this data set's images instead of the run's")
    p.add_argument("--data-root", default=None, help="where --dataset's files are")
    p.add_argument("--out", default=None, help="folder of the two files (default: RUN_DIR, or the stage's folder)")
    p.add_argument("--stage", default=None, help="the network of this finished stage of a run of stages, not the "
                                                 "run's model (e.g. pretrain: a clustering run's MoCo backbone)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")

    p = sub.add_parser("evaluate", help="recompute the test metrics of a run from its best model")
    p.add_argument("run_dir", help="a run directory (with config.yaml and best.pt)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--data-root", default=None, help="the data set's files are here now (default: where the run "
                                                     "read them)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("evaluate-embeddings", help="metrics of any embeddings (.npy) and labels")
    p.add_argument("embeddings", help=".npy array (N, D) of query embeddings")
    p.add_argument("labels", help=".npy array (N,) of their integer labels")
    p.add_argument("--ref-embeddings", default=None, help="reference (gallery) embeddings; default leave-one-out")
    p.add_argument("--ref-labels", default=None, help="integer labels of the reference embeddings")
    p.add_argument("--recall-k", default="1,2,4,8", help="K values of Recall@K (default: 1,2,4,8)")
    p.add_argument("--knn-k", type=int, default=5, help="neighbours of the kNN vote (default: 5)")
    p.add_argument("--faiss", action="store_true", help="search with faiss (pip install faiss-cpu)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("compare", help="train methods x seeds with the same settings and write the comparison table")
    p.add_argument("--methods", default=None, help="comma-separated methods, e.g. nngk,mixup,mbdml1")
    p.add_argument("--seeds", default=None, help="seeds: 0-9, 0,3,5 or 3")
    p.add_argument("--out", default=None, help="study folder (default: comparisons/<dataset>-<labeled-fraction>)")
    p.add_argument("--config", default=None, help="YAML file of settings shared by all runs (flags override it)")
    p.add_argument("--table-only", action="store_true",
                   help="only rebuild the table from the finished runs (methods/seeds default to those found)")
    _add_config_flags(p, tuple(SECTIONS), exclude=("method", "seed", "out"))

    p = sub.add_parser("plot", help="accuracy curves, t-SNE (PNG and GIF over epochs) and feature spaces of runs")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories and/or comparison directories")
    p.add_argument("--out", default=None, help="folder of the figures (default: <first DIR>/plots)")
    p.add_argument("--what", default=None, help="comma-separated subset of curves,tsne,gif,spaces (default: all)")
    p.add_argument("--device", default="cpu", help="device that embeds the images (default: cpu)")
    return parser


def cmd_datasets(args: argparse.Namespace) -> None:
    from weakdml.data.registry import dataset_status

    cfg = build_config(overrides={"data_root": args.data_root})
    for status in dataset_status(cfg.data):
        mark = "found" if status.found else "missing"
        print(f"{status.name:14s} {mark:8s} {status.description}")
        print(f"{'':14s} looked in: {', '.join(status.looked_in) or '-'}")
        if not status.found:
            print(f"{'':14s} to get it: {status.how_to_get}")


def cmd_split(args: argparse.Namespace) -> None:
    from weakdml.data.prepare import split_for
    from weakdml.data.registry import load_dataset

    cfg = build_config(overrides=_overrides(args) | {"split": None})
    bundle = load_dataset(cfg.data)
    split = split_for(cfg, bundle)
    out = Path(args.out or f"split-{cfg.data.dataset}-s{cfg.train.seed}.json")
    split.save(out)
    print(f"{out}: {len(split.labeled)} labelled, {len(split.val)} validation, {len(split.unlabeled)} unlabelled "
          f"of {split.pool_size} training images (seed {split.seed})")


def cmd_train(args: argparse.Namespace) -> None:
    from weakdml.engine import run

    _log_to_terminal()
    if args.resume and args.config:
        raise UserError("--resume continues a run with its saved settings: drop --config (flags such as --epochs or "
                        "--nst-rounds may still extend it)")
    if args.from_teacher and (args.resume or args.config):
        raise UserError("--from-teacher starts a new run with the teacher's settings: give neither --resume nor "
                        "--config with it")
    if args.resume:
        summary = run.resume(Path(args.resume), _overrides(args))
    elif args.from_teacher:
        summary = run.train_student(Path(args.from_teacher), _overrides(args))
    else:
        summary = run.train(build_config(args.config, _overrides(args)), force=args.force)
    primary = summary.metrics["primary_metric"]
    print(f"{primary.replace('_', ' ')}: {summary.metrics.get(primary, float('nan')):.4f}")
    print(f"run directory: {summary.run_dir}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from weakdml.engine import run
    from weakdml.methods.moco import PRETRAIN_DEFAULTS

    _log_to_terminal()
    if args.resume:
        summary = run.resume(Path(args.resume), _overrides(args))
    else:
        summary = run.train(build_config(overrides=PRETRAIN_DEFAULTS | _overrides(args)), force=args.force)
    print(f"pretrained backbone: {summary.run_dir} (start other runs from it with --pretrained {summary.run_dir})")


def cmd_cluster(args: argparse.Namespace) -> None:
    from weakdml.engine import cluster
    from weakdml.pipelines.spice import CLUSTER_DEFAULTS

    _log_to_terminal()
    labels = Path(args.labels) if args.labels else None
    overrides = _overrides(args) | ({"dataset": "images", "data_root": args.folder} if args.folder else {})
    if args.resume:
        summary = cluster.resume_cluster(Path(args.resume), overrides, labels)
    else:
        summary = cluster.cluster(build_config(overrides=CLUSTER_DEFAULTS | overrides), labels, args.force)
    _print_clustering(summary)


def cmd_cluster_stage(args: argparse.Namespace) -> None:
    from weakdml.engine import cluster

    _log_to_terminal()
    labels = Path(args.labels) if args.labels else None
    _print_clustering(cluster.run_stage(Path(args.run_dir), args.stage, _overrides(args), labels))


def _print_clustering(summary: Any) -> None:
    shown = {k: v for k, v in summary.metrics.items() if k != "cluster_names"}
    print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
    print(f"run directory: {summary.run_dir}")


def cmd_embed(args: argparse.Namespace) -> None:
    from weakdml.engine.embed import embed_run

    out, n = embed_run(Path(args.run_dir), Path(args.out) if args.out else None, args.dataset, args.data_root,
                       args.device, args.stage)
    print(f"{n} embeddings: {out / 'embeddings.npy'}, ids: {out / 'ids.txt'}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from weakdml.engine.run import evaluate_run
    from weakdml.evaluation.report import format_metrics

    metrics = evaluate_run(Path(args.run_dir), args.device, args.data_root)
    if not (Path(args.run_dir) / "final_metrics.json").is_file():
        print(f"weakdml: note: {args.run_dir} has not finished training; these are its best model's metrics so far",
              file=sys.stderr)
    print(json.dumps(metrics, indent=2) if args.json else format_metrics(metrics))


def cmd_evaluate_embeddings(args: argparse.Namespace) -> None:
    import numpy as np

    from weakdml.evaluation.report import evaluate_embeddings, format_metrics

    def load(path: str | None) -> Any:
        if path is None:
            return None
        try:
            with open(path, "rb") as handle:
                if handle.read(6) != b"\x93NUMPY":
                    raise UserError(f"{path} is not a .npy file (it lacks the NumPy header); write the array with "
                                    f"numpy.save")
                handle.seek(0)
                return np.load(handle, allow_pickle=False)
        except OSError as error:
            raise UserError(f"cannot read {path}: {error.strerror}") from None
        except ValueError as error:  # e.g. an array of Python objects, which only a pickle can hold
            raise UserError(f"cannot read {path} as a .npy array of numbers: {error}") from None

    if (args.ref_embeddings is None) != (args.ref_labels is None):
        raise UserError("give both --ref-embeddings and --ref-labels, or neither")
    try:
        ks = tuple(int(k) for k in args.recall_k.split(","))
    except ValueError:
        raise UserError(f"--recall-k expects comma-separated integers, got {args.recall_k!r}") from None
    metrics = evaluate_embeddings(load(args.embeddings), load(args.labels), load(args.ref_embeddings),
                                  load(args.ref_labels), recall_ks=ks, knn_k=args.knn_k,
                                  backend="faiss" if args.faiss else "torch")
    print(json.dumps(metrics, indent=2) if args.json else format_metrics(metrics))


def cmd_compare(args: argparse.Namespace) -> None:
    from weakdml.engine.compare import compare, default_out, parse_methods, parse_seeds

    _log_to_terminal()
    overrides = _overrides(args)
    methods = parse_methods(args.methods) if args.methods else None
    seeds = parse_seeds(args.seeds) if args.seeds else None
    out = Path(args.out) if args.out else default_out(build_config(args.config, overrides))
    print(compare(out, methods, seeds, args.config, overrides, table_only=args.table_only))
    print(f"written: {out}/table.md, table.csv, table.tex, summary.json")


def cmd_plot(args: argparse.Namespace) -> None:
    from weakdml.plots import make_plots
    from weakdml.plots.make import parse_what

    _log_to_terminal()
    what = parse_what(args.what)
    for path in make_plots([Path(d) for d in args.dirs], Path(args.out) if args.out else None, what, args.device):
        print(path)


def _log_to_terminal() -> None:
    log.setLevel(logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each message (it may be replaced, e.g. by a test)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


# Errors of the user's paths and machine (a file where a folder is needed, no permission, a full or read-only
# disk): one line with what to do. Any other OSError is a programming error and keeps its traceback.
USER_OS_ERRORS = {
    errno.EEXIST: "a file is in the way: remove it or choose another path",
    errno.ENOTDIR: "a file stands where a folder is needed: remove it or choose another path",
    errno.EISDIR: "a folder stands where a file is needed: give a file's path",
    errno.EACCES: "check the permissions of that path, or choose another",
    errno.EPERM: "check the permissions of that path, or choose another",
    errno.ENOSPC: "free disk space or choose a folder on another disk; an interrupted run keeps its last checkpoint "
                  "and continues with `weakdml train --resume RUN_DIR`",
    errno.EROFS: "choose a folder on a writable disk",
}

COMMANDS = {"datasets": cmd_datasets, "split": cmd_split, "train": cmd_train, "pretrain": cmd_pretrain,
            "cluster": cmd_cluster, "cluster-self": cmd_cluster_stage, "reliable": cmd_cluster_stage,
            "cluster-semi": cmd_cluster_stage, "embed": cmd_embed, "evaluate": cmd_evaluate,
            "evaluate-embeddings": cmd_evaluate_embeddings, "compare": cmd_compare,
            "plot": cmd_plot}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if dist.launched_rank() != 0:  # of torchrun's processes, rank 0 reports
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the rest of the process
    code = 1
    try:
        code = run_command(args)
        return code
    finally:
        dist.stop(together=code == 0)


def run_command(args: argparse.Namespace) -> int:
    try:
        COMMANDS[args.command](args)
    except FailedOnAnotherRank:  # rank 0 reported it
        return 2
    except UserError as error:
        if dist.world_size() > 1:  # the processes have joined: each failing one speaks for itself
            print(f"weakdml: error (rank {dist.rank()}): {error}", file=sys.stderr)
        elif dist.launched_rank() == 0:  # before they join, every process fails alike: rank 0 speaks for all
            print(f"weakdml: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("weakdml: interrupted; a run that finished an epoch continues with `weakdml train --resume RUN_DIR` "
              "(its directory holds last.pt), one stopped earlier by running the same command again, and `compare` "
              "by running it again", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `weakdml evaluate RUN --json | head`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:
        if error.errno not in USER_OS_ERRORS:
            raise
        where = f": {error.filename}" if error.filename else ""
        print(f"weakdml: error: {error.strerror}{where}; {USER_OS_ERRORS[error.errno]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
