"""Every setting of a run, as dataclasses: read from YAML, overridden by CLI flags, validated with clear messages.

A config has one section per concern (``data``, ``model``, ``optim``, ``train``, ``nngk``, ``mixup``, ``nst``,
``dml``, ``iaa``, ``mdr``, ``moco``, ``spice``); a section may have a switch named after it (``--iaa``, ``--mdr``).
Each field is a CLI flag named after it (``labeled_fraction`` -> ``--labeled-fraction``); field names are unique across
sections so flags stay flat. The resolved config is saved as ``config.yaml`` in the run directory.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from weakdml.atomic import write_text_atomic
from weakdml.config_checks import validate
from weakdml.config_fields import BACKBONES, flag
from weakdml.config_methods import (
    DMLConfig,
    IAAConfig,
    MDRConfig,
    MixupConfig,
    MoCoConfig,
    NNGKConfig,
    NSTConfig,
    SpiceConfig,
)
from weakdml.errors import UserError

# The sections of the methods live in config_methods.py; every field is declared with config_fields.flag.


@dataclass
class DataConfig:
    dataset: str = flag("digits", "data set name (see `weakdml datasets`)")
    data_root: str | None = flag(None, "folder holding the data set's files", role="location")
    train_dir: str | None = flag(None, "folder dataset: training images as <dir>/<class>/* (MbDML's --data_dir)",
                                 role="location")
    test_dir: str | None = flag(None, "folder dataset: test images as <dir>/<class>/* (MbDML's --test)",
                                role="location")
    unlabeled_dir: str | None = flag(None, "flat folder of extra unlabelled images", role="location")
    im_ext: str | None = flag(None, "folder dataset: only read files with this extension (e.g. png)")
    input_size: int | None = flag(None, "resize images to this many pixels per side (default: the data set's own; "
                                        "digits: 16; the retrieval benchmarks: 256, seen as crops of 7/8 of it)")
    download: bool = flag(False, "let torchvision download the data set into --data-root")
    labeled_fraction: float = flag(0.1, "fraction of the training set that keeps its labels (0: none, for label-free "
                                        "methods)")
    labels_per_class: int | None = flag(None, "labelled images per class (instead of --labeled-fraction)")
    test_as_unlabeled: bool = flag(False, "put the test images among the unlabelled ones too, their labels hidden "
                                          "(the transductive protocol of clustering papers: SPICE clusters all 70,000 "
                                          "Fashion-MNIST images; the test metrics are then on images trained on)")
    val_fraction: float = flag(0.2, "fraction of the labelled part held out for model selection")
    val_classes: int = flag(0, "hold out this many training classes (all their images) for model selection instead "
                               "of a share of each class's images (retrieval: validation on unseen classes)")
    class_disjoint: bool = flag(False, "retrieval on classes never trained on: train on the first half of the "
                                       "classes, test on the others (or set --train-classes)")
    train_classes: list[int] = flag([], "retrieval: train on these class indices (e.g. 0-4 or 0,2,4), test on the "
                                        "others; implies --class-disjoint")
    split: str | None = flag(None, "use this saved split file (from `weakdml split`, or a run directory's); "
                                   "--labeled-fraction, --labels-per-class and --val-fraction are then unused")
    augment: str = flag("auto", "training augmentation: none, horizontal flips (flip: the original MbDML code's), "
                                "±1/8 shifts and flips (weak), RandAugment and cutout on top (strong), random resized "
                                "crops of 0.16-1 of the area and flips (retrieval: the DML papers'), or auto "
                                "(retrieval on the retrieval benchmarks, else weak)",
                        ("auto", "none", "flip", "weak", "strong", "retrieval"))
    cache_dir: str | None = flag(None, "folder and retrieval data sets: decode the images once, in parallel, into a "
                                       "uint8 cache in this folder and read batches from it (memory stays bounded "
                                       "whatever the data set's size; reused while the files are unchanged)",
                                 role="bookkeeping")
    decode_on_load: bool = flag(False, "folder data sets: keep only the file list and decode each batch's images when "
                                       "it is loaded (spread over --workers processes): neither memory nor disk "
                                       "beyond the files, at the cost of decoding every epoch (the retrieval "
                                       "benchmarks' default)", role="bookkeeping")
    workers: int = flag(0, "processes that load batches ahead of training (0: one background thread; use more when "
                           "images are decoded from files)", role="bookkeeping")


@dataclass
class ModelConfig:
    backbone: str = flag("small-cnn", "backbone network", BACKBONES)
    width: float = flag(1.0, "small-cnn: channel multiplier (1: 32-64-128-256 channels, 388 k parameters; 2: 1.55 M)")
    embedding_dim: int | None = flag(64, "linear projection to this size (0 or None: the backbone's features)")
    l2_normalize: bool | None = flag(None, "L2-normalise embeddings (default: on for kernel and metric-learning "
                                           "methods, off for the softmax heads of cross-entropy and mixup and "
                                           "with --mdr; the original NNGK did not normalise: use "
                                           "--no-l2-normalize with --sigma 10)")
    pretrained: str | None = flag(None, "local state dict (.pt/.pth), or a run directory (e.g. weakdml pretrain's), "
                                        "to initialise the backbone")
    small_stem: bool | None = flag(None, "ResNet stem of a 3x3 stride-1 conv without max-pool (default: for images of "
                                         "64 px or less; turn off to load ImageNet weights)")
    batchnorm: str = flag("train", "BatchNorm: statistics of each batch in training (train); statistics and affine "
                                   "parameters kept as they start, e.g. pretrained (frozen); statistics kept at their "
                                   "start, affine parameters learnt (eval: the original MbDML code, whose model was "
                                   "never put in train mode)", ("train", "frozen", "eval"))
    input_norm: str = flag("data", "input normalisation: the labelled images' per-channel mean and std (data), or "
                                   "0.5 and 0.5 (half: the original MbDML code's)", ("data", "half"))
    grey_as_rgb: bool = flag(False, "feed grey images to the backbone as three identical channels (the original "
                                    "MbDML code read every image as RGB)")
    pooling: str = flag("avg", "ResNets and GoogLeNet: global average pooling of the last feature map, or its sum "
                               "with global max pooling (avg+max, the IAA code's GAP + GMP)", ("avg", "avg+max"))
    dropout: float = flag(0.0, "dropout before the embedding projection")
    stochastic_depth: float = flag(0.0, "stochastic-depth drop rate of residual blocks (ResNets)")


@dataclass
class OptimConfig:
    optimizer: str = flag("adam", "optimiser", ("adam", "adamw", "sgd"))
    lr: float = flag(1e-3, "learning rate")
    weight_decay: float = flag(0.0, "weight decay")
    momentum: float = flag(0.9, "SGD momentum")
    schedule: str = flag("cosine", "learning-rate schedule", ("none", "cosine", "step"))
    schedule_unit: str = flag("epoch", "the schedule changes the learning rate once per epoch (as most DML code) or "
                                       "at every step (MoCo, FixMatch)", ("epoch", "step"))
    warmup_epochs: float = flag(0.0, "linear warm-up of the learning rate over this many epochs (fractions allowed)")
    milestones: list[int] = flag([], "step schedule: epochs at which lr is multiplied by --gamma")
    gamma: float = flag(0.1, "step schedule: multiplier")
    embedding_lr_factor: float = flag(1.0, "learning-rate factor of everything after the backbone (the embedding "
                                           "layer, a loss's proxies or levels); the IAA paper's recipe: 10")


@dataclass
class TrainConfig:
    method: str = flag("nngk", "training method (README: Methods)")
    seed: int = flag(0, "seed of the split, the initialisation and the data order")
    epochs: int = flag(100, "training epochs", role="extendable")
    batch_size: int = flag(32, "training batch size (MbDML's original: 32)")
    eval_batch_size: int = flag(256, "batch size for embedding and evaluation", role="bookkeeping")
    eval_every: int = flag(1, "evaluate validation and test every this many epochs (and at the last one); the best "
                              "model is chosen among the evaluated epochs")
    monitor: str = flag("auto", "what best.pt follows: val_accuracy, val_recall@1, train_loss, last, or auto (the "
                                "method's and task's choice); a metric name may end in :min or :max")
    device: str = flag("auto", "auto, cpu, cuda, cuda:N or mps", role="bookkeeping")
    amp: str = flag("auto", "mixed precision on CUDA: bf16, fp16 (with loss scaling) or off; auto: bf16 where the "
                            "GPU supports it, else fp16 (kernels, log-sum-exps, losses and augmentation run in "
                            "float32); on the CPU bf16 when asked for (fast on CPUs with AMX or AVX-512 BF16), "
                            "else float32; other devices train in float32", ("auto", "bf16", "fp16", "off"),
                    role="bookkeeping", earlier={True: "auto", False: "off"})
    deterministic: bool = flag(False, "use deterministic algorithms (slower on GPU)")
    knn: str = flag("exact", "nearest-neighbour search of evaluation and of the NNGK bank's neighbour lists: exact, "
                             "or faiss's approximate IVF or HNSW index, for test sets and banks of about a million "
                             "embeddings and more (recall against exact search: benchmarks/knn_search.py)",
                    ("exact", "faiss-ivf", "faiss-hnsw"), role="bookkeeping")
    sync_batchnorm: bool = flag(False, "with torchrun on GPUs: BatchNorm in training mode normalises by the whole "
                                       "global batch's statistics (SyncBatchNorm) instead of each process's rows")
    out: str | None = flag(None, "run directory (default: runs/<dataset>-<method>-s<seed>-<time>)",
                           role="bookkeeping")
    progress: str = flag("auto", "progress bars", ("auto", "on", "off"), role="bookkeeping")
    snapshot_images: int | None = flag(None, "save embeddings of this many test images at every evaluated epoch (for "
                                             "animated t-SNE; 0: none; default: 1000 with small-cnn, else 0)",
                                       role="bookkeeping")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    nngk: NNGKConfig = field(default_factory=NNGKConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    nst: NSTConfig = field(default_factory=NSTConfig)
    dml: DMLConfig = field(default_factory=DMLConfig)
    iaa: IAAConfig = field(default_factory=IAAConfig)
    mdr: MDRConfig = field(default_factory=MDRConfig)
    moco: MoCoConfig = field(default_factory=MoCoConfig)
    spice: SpiceConfig = field(default_factory=SpiceConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dump(self) -> str:
        """The settings as YAML, by section."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: Path) -> None:
        write_text_atomic(path, self.dump())



SECTIONS: dict[str, type] = typing.get_type_hints(Config)


def settings_with_role(*roles: str) -> tuple[str, ...]:
    """The names of the settings whose declared role is one of ``roles`` (see ROLES)."""
    return tuple(name for name, (_, f, _) in all_fields().items() if f.metadata["role"] in roles)


def _field_types(section: type) -> dict[str, Any]:
    return typing.get_type_hints(section)


def all_fields() -> dict[str, tuple[str, dataclasses.Field, Any]]:
    """Every field by name: (section name, the field, its type). Names are unique across sections."""
    out: dict[str, tuple[str, dataclasses.Field, Any]] = {}
    for section_name, section in SECTIONS.items():
        hints = _field_types(section)
        for f in fields(section):
            assert f.name not in out, f"config field {f.name} appears in two sections"
            out[f.name] = (section_name, f, hints[f.name])
    return out


def _coerce(name: str, value: Any, kind: Any) -> Any:
    """Convert a YAML or CLI value to the field's type, or raise UserError naming the field."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    optional = type(None) in typing.get_args(kind)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise UserError(f"setting '{name}' cannot be empty")
    base = args[0] if optional else kind
    origin = typing.get_origin(base)
    try:
        if origin is list:
            item = typing.get_args(base)[0]
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return [x for v in value for x in _expand_range(v, item, name)]
        return _scalar(name, value, base)
    except (TypeError, ValueError):
        expected = f"a list of {typing.get_args(base)[0].__name__}" if origin is list else base.__name__
        raise UserError(f"setting '{name}' expects {expected}, got {value!r}") from None


def _expand_range(value: Any, item: type, name: str) -> list[Any]:
    """'3-5' -> [3, 4, 5] for integer lists; any other value -> [the value as ``item``]."""
    if item is int and isinstance(value, str) and value.count("-") == 1 and not value.startswith("-"):
        first, last = value.split("-")
        return list(range(int(first), int(last) + 1))
    return [_scalar(name, value, item)]


def _scalar(name: str, value: Any, base: type) -> Any:
    """One value as ``base`` (bool, int, float or str); ValueError if it is not one. A YAML boolean is no number
    (``epochs: true`` is not 1 epoch), a float must be finite, a text must be UTF-8 (config.yaml is)."""
    if base in (int, float) and isinstance(value, bool):
        raise ValueError(value)
    if base is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    if base is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    converted = base(value)
    if base is float and not math.isfinite(converted):
        raise UserError(f"setting '{name}' must be a finite number, got {value!r}")
    if base is str:
        try:
            converted.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"setting '{name}' is not valid UTF-8 text ({converted!r}); rename the file or "
                            f"folder") from None
    return converted


def build_config(yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file (nested by section, or flat), then the overrides (flat names); validated."""
    values: dict[str, Any] = {}
    if yaml_path is not None:
        values.update(_read_yaml(Path(yaml_path)))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_flat(values)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not a text file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise UserError(f"config file {path} is not valid YAML{where}: {str(error).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise UserError(f"config file {path} must hold a mapping of settings")
    flat: dict[str, Any] = {}
    for key, value in loaded.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return {k.replace("-", "_"): v for k, v in flat.items()}


def config_from_flat(values: dict[str, Any]) -> Config:
    known = all_fields()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(unknown)}; run `weakdml train --help` for the list")
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for name, value in values.items():
        section_name, f, kind = known[name]
        if isinstance(value, bool) and value in f.metadata["earlier"]:
            value = f.metadata["earlier"][value]
        value = _coerce(name, value, kind)
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise UserError(f"setting '{name}' must be one of {', '.join(choices)}, got {value!r}")
        sections[section_name][name] = value
    config = Config(**{name: SECTIONS[name](**kw) for name, kw in sections.items()})
    validate(config)
    paths = (*settings_with_role("location"), "split", "pretrained", "cache_dir")
    for name in paths:  # saved absolute: a run is evaluated and resumed from any folder
        section = getattr(config, known[name][0])
        if getattr(section, name):
            setattr(section, name, str(Path(getattr(section, name)).expanduser().absolute()))
    return config


def same_setting(a: Any, b: Any) -> bool:
    """Equality of two setting values in which NaN equals NaN (a saved NaN is not a change)."""
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return both_nan or a == b


def snapshot_images(cfg: Config) -> int:
    """Test images whose embeddings are saved at evaluated epochs: --snapshot-images, by default 1000 with the cheap
    small-cnn and none with larger backbones (there they would cost as much as the evaluation itself)."""
    given = cfg.train.snapshot_images
    return (1000 if cfg.model.backbone == "small-cnn" else 0) if given is None else given
