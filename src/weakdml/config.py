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
from weakdml.errors import UserError

BACKBONES = ("small-cnn", "resnet18", "resnet50", "googlenet")


# What a setting is, declared once beside it. "training" settings change what is learned: a resumed run, the runs of
# one study and a student on another run's teacher must share them. "extendable" ones may only grow on resume
# (--epochs, --nst-rounds). "bookkeeping" ones change where and how a run is computed or recorded, not its result;
# "location" ones say where the data's files are (a run may be resumed or evaluated with its data moved: the split's
# fingerprint checks that it is the same data).
ROLES = ("training", "extendable", "bookkeeping", "location")


def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None, role: str = "training") -> Any:
    assert role in ROLES, role
    metadata = {"help": help, "choices": choices, "role": role}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    dataset: str = _opt("digits", "data set name (see `weakdml datasets`)")
    data_root: str | None = _opt(None, "folder holding the data set's files", role="location")
    train_dir: str | None = _opt(None, "folder dataset: training images as <dir>/<class>/* (MbDML's --data_dir)",
                                 role="location")
    test_dir: str | None = _opt(None, "folder dataset: test images as <dir>/<class>/* (MbDML's --test)",
                                role="location")
    unlabeled_dir: str | None = _opt(None, "flat folder of extra unlabelled images", role="location")
    im_ext: str | None = _opt(None, "folder dataset: only read files with this extension (e.g. png)")
    input_size: int | None = _opt(None, "resize images to this many pixels per side (default: the data set's own; "
                                        "digits: 16; the retrieval benchmarks: 256, seen as crops of 7/8 of it)")
    download: bool = _opt(False, "let torchvision download the data set into --data-root")
    labeled_fraction: float = _opt(0.1, "fraction of the training set that keeps its labels (0: none, for label-free "
                                        "methods)")
    labels_per_class: int | None = _opt(None, "labelled images per class (instead of --labeled-fraction)")
    val_fraction: float = _opt(0.2, "fraction of the labelled part held out for model selection")
    val_classes: int = _opt(0, "hold out this many training classes (all their images) for model selection instead "
                               "of a share of each class's images (retrieval: validation on unseen classes)")
    class_disjoint: bool = _opt(False, "retrieval on classes never trained on: train on the first half of the "
                                       "classes, test on the others (or set --train-classes)")
    train_classes: list[int] = _opt([], "retrieval: train on these class indices (e.g. 0-4 or 0,2,4), test on the "
                                        "others; implies --class-disjoint")
    split: str | None = _opt(None, "use this saved split file (from `weakdml split`, or a run directory's); "
                                   "--labeled-fraction, --labels-per-class and --val-fraction are then unused")
    augment: str = _opt("auto", "training augmentation: none, horizontal flips (flip: the original MbDML code's), "
                                "±1/8 shifts and flips (weak), RandAugment and cutout on top (strong), random resized "
                                "crops of 0.16-1 of the area and flips (retrieval: the DML papers'), or auto "
                                "(retrieval on the retrieval benchmarks, else weak)",
                        ("auto", "none", "flip", "weak", "strong", "retrieval"))
    cache_dir: str | None = _opt(None, "folder and retrieval data sets: decode the images once, in parallel, into a "
                                       "uint8 cache in this folder and read batches from it (memory stays bounded "
                                       "whatever the data set's size; reused while the files are unchanged)",
                                 role="bookkeeping")
    decode_on_load: bool = _opt(False, "folder data sets: keep only the file list and decode each batch's images when "
                                       "it is loaded (spread over --workers processes): neither memory nor disk "
                                       "beyond the files, at the cost of decoding every epoch (the retrieval "
                                       "benchmarks' default)", role="bookkeeping")
    workers: int = _opt(0, "processes that load batches ahead of training (0: one background thread; use more when "
                           "images are decoded from files)", role="bookkeeping")


@dataclass
class ModelConfig:
    backbone: str = _opt("small-cnn", "backbone network", BACKBONES)
    width: float = _opt(1.0, "small-cnn: channel multiplier (1: 32-64-128-256 channels, 388 k parameters; 2: 1.55 M)")
    embedding_dim: int | None = _opt(64, "linear projection to this size (0 or None: the backbone's features)")
    l2_normalize: bool | None = _opt(None, "L2-normalise embeddings (default: on for kernel and metric-learning "
                                           "methods, off for the softmax heads of cross-entropy and mixup and "
                                           "with --mdr; the original NNGK did not normalise: use "
                                           "--no-l2-normalize with --sigma 10)")
    pretrained: str | None = _opt(None, "local state dict (.pt/.pth), or a run directory (e.g. weakdml pretrain's), "
                                        "to initialise the backbone")
    small_stem: bool | None = _opt(None, "ResNet stem of a 3x3 stride-1 conv without max-pool (default: for images of "
                                         "64 px or less; turn off to load ImageNet weights)")
    batchnorm: str = _opt("train", "BatchNorm: statistics of each batch in training (train); statistics and affine "
                                   "parameters kept as they start, e.g. pretrained (frozen); statistics kept at their "
                                   "start, affine parameters learnt (eval: the original MbDML code, whose model was "
                                   "never put in train mode)", ("train", "frozen", "eval"))
    input_norm: str = _opt("data", "input normalisation: the labelled images' per-channel mean and std (data), or "
                                   "0.5 and 0.5 (half: the original MbDML code's)", ("data", "half"))
    grey_as_rgb: bool = _opt(False, "feed grey images to the backbone as three identical channels (the original "
                                    "MbDML code read every image as RGB)")
    pooling: str = _opt("avg", "ResNets and GoogLeNet: global average pooling of the last feature map, or its sum "
                               "with global max pooling (avg+max, the IAA code's GAP + GMP)", ("avg", "avg+max"))
    dropout: float = _opt(0.0, "dropout before the embedding projection")
    stochastic_depth: float = _opt(0.0, "stochastic-depth drop rate of residual blocks (ResNets)")


@dataclass
class OptimConfig:
    optimizer: str = _opt("adam", "optimiser", ("adam", "adamw", "sgd"))
    lr: float = _opt(1e-3, "learning rate")
    weight_decay: float = _opt(0.0, "weight decay")
    momentum: float = _opt(0.9, "SGD momentum")
    schedule: str = _opt("cosine", "learning-rate schedule", ("none", "cosine", "step"))
    schedule_unit: str = _opt("epoch", "the schedule changes the learning rate once per epoch (as most DML code) or "
                                       "at every step (MoCo, FixMatch)", ("epoch", "step"))
    warmup_epochs: float = _opt(0.0, "linear warm-up of the learning rate over this many epochs (fractions allowed)")
    milestones: list[int] = _opt([], "step schedule: epochs at which lr is multiplied by --gamma")
    gamma: float = _opt(0.1, "step schedule: multiplier")
    embedding_lr_factor: float = _opt(1.0, "learning-rate factor of everything after the backbone (the embedding "
                                           "layer, a loss's proxies or levels); the IAA paper's recipe: 10")


@dataclass
class TrainConfig:
    method: str = _opt("nngk", "training method (README: Methods)")
    seed: int = _opt(0, "seed of the split, the initialisation and the data order")
    epochs: int = _opt(100, "training epochs", role="extendable")
    batch_size: int = _opt(32, "training batch size (MbDML's original: 32)")
    eval_batch_size: int = _opt(256, "batch size for embedding and evaluation", role="bookkeeping")
    eval_every: int = _opt(1, "evaluate validation and test every this many epochs (and at the last one); the best "
                              "model is chosen among the evaluated epochs")
    monitor: str = _opt("auto", "what best.pt follows: val_accuracy, val_recall@1, train_loss, last, or auto (the "
                                "method's and task's choice); a metric name may end in :min or :max")
    device: str = _opt("auto", "auto, cpu, cuda, cuda:N or mps", role="bookkeeping")
    amp: bool = _opt(True, "mixed precision on CUDA (the NNGK kernel always runs in float32)")
    deterministic: bool = _opt(False, "use deterministic algorithms (slower on GPU)")
    out: str | None = _opt(None, "run directory (default: runs/<dataset>-<method>-s<seed>-<time>)",
                           role="bookkeeping")
    progress: str = _opt("auto", "progress bars", ("auto", "on", "off"), role="bookkeeping")
    snapshot_images: int | None = _opt(None, "save embeddings of this many test images at every evaluated epoch (for "
                                             "animated t-SNE; 0: none; default: 1000 with small-cnn, else 0)",
                                       role="bookkeeping")


@dataclass
class NNGKConfig:
    sigma: float = _opt(0.3, "Gaussian kernel width (original: 10 on unnormalised 2048-d features; 0.3 suits "
                              "L2-normalised embeddings)")
    learnable_sigma: bool = _opt(False, "learn sigma (as log sigma) with the network")
    neighbours: int = _opt(200, "K nearest centres used by the kernel classifier")
    update_interval: int = _opt(1, "refresh the support bank every this many epochs (original: 5)")


@dataclass
class MixupConfig:
    alpha: float = _opt(1.0, "mixing weight λ ~ Beta(alpha, alpha); alpha <= 0 turns mixing off")
    beta: float = _opt(1.0, "weight of the clean NNGK term (MbDML1, MbDML3, MbDML4)")
    scale_mixup: float | None = _opt(None, "weight of the mixup term (default per method: mbdml1-3 2, mbdml4 1, as "
                                           "in the original README's commands; its argparse default was 0.0001)")
    mixed_neighbours: str = _opt("all", "MbDML2-4: a mixed sample is scored against every centre, its K nearest "
                                        "centres, or the un-permuted sample's neighbour list (the original code)",
                                 ("all", "bank", "original"))


@dataclass
class NSTConfig:
    nst_variant: str = _opt("teacher-student", "Noisy Student as teacher/student rounds, or the original's online "
                                               "variant (one network labels each unlabelled batch)",
                            ("teacher-student", "online"))
    nst_rounds: int = _opt(1, "teacher -> student rounds (each student is the next teacher); with --resume, more "
                              "rounds for a finished run", role="extendable")
    nst_epochs: int | None = _opt(None, "epochs of each student (default: --epochs)")
    nst_threshold: float = _opt(0.9, "keep an unlabelled image when the teacher's max probability reaches this")
    nst_soft: bool = _opt(False, "train students on the teacher's probabilities instead of hard labels")
    nst_balance: bool = _opt(True, "spread the pseudo-labelled images evenly over the predicted classes, most "
                                   "confident first (the threshold sets how many)")
    nst_backbone: str | None = _opt(None, "the students' backbone (default: the teacher's; Xie et al.'s student is "
                                          "equal or larger)", BACKBONES)
    nst_width: float | None = _opt(None, "small-cnn: the students' channel multiplier (default: the teacher's --width)")
    nst_init: str = _opt("scratch", "each student starts re-initialised (Xie et al.) or from its teacher's weights "
                                    "(far fewer student epochs needed)", ("scratch", "teacher"))
    nst_dropout: float = _opt(0.3, "student noise: dropout before the embedding projection")
    nst_stochastic_depth: float = _opt(0.2, "student noise: stochastic-depth drop rate of the last residual block, "
                                            "linearly less for earlier ones (ResNets; Xie et al.: 0.2)")
    nst_augment: str = _opt("strong", "student noise: augmentation", ("none", "flip", "weak", "strong"))
    scale_nst: float = _opt(1.0, "weight of the pseudo-labelled loss (the original online variant used 2)")
    unlabeled_ratio: int = _opt(3, "unlabelled images per labelled image in a step")
    c_tau: float = _opt(0.8, "online variant: keep when max p > c_tau x mean max p of the labelled batch")
    nst_start: int = _opt(20, "online variant: epoch from which unlabelled images are used (original: 20)")


@dataclass
class DMLConfig:
    m_per_class: int = _opt(4, "DML baselines: images per class in a batch (batch-size / m classes per batch)")
    contrastive_pos_margin: float = _opt(0.0, "contrastive: positive pairs closer than this cost nothing (PML "
                                              "default)")
    contrastive_neg_margin: float = _opt(1.0, "contrastive: negative pairs farther than this cost nothing (PML "
                                              "default)")
    proxy_margin: float = _opt(0.1, "proxy-anchor: margin δ (PML default)")
    proxy_alpha: float = _opt(32.0, "proxy-anchor: scale α (PML default)")
    centers_per_class: int = _opt(10, "soft-triple: centres per class (PML default)")
    soft_triple_la: float = _opt(20.0, "soft-triple: scale λ of the class similarities (PML default)")
    soft_triple_gamma: float = _opt(0.1, "soft-triple: temperature γ of the soft-max over a class's centres (PML "
                                         "default)")
    soft_triple_margin: float = _opt(0.01, "soft-triple: margin δ (PML default)")
    supcon_temperature: float = _opt(0.1, "supcon: temperature (PML default)")
    triplet_margin: float = _opt(0.05, "triplet: margin of the loss and the miner (PML's loss default)")
    triplet_miner: str = _opt("semihard", "triplet: TripletMarginMiner type; 'all' = every triplet that violates "
                                          "the margin (PML's loss without a miner)", ("semihard", "hard", "all"))
    contrastive_distance: str = _opt("euclidean", "contrastive: margins on Euclidean distances (PML default) or on "
                                                  "cosine similarities (the IAA paper: --contrastive-pos-margin 0.8 "
                                                  "--contrastive-neg-margin 0.5)", ("euclidean", "cosine"))
    ms_thresh: float = _opt(0.5, "ms: similarity threshold λ of the loss (PML's base; the IAA paper's 0.5)")
    ms_margin: float = _opt(0.1, "ms: margin ε of the multi-similarity miner (the IAA paper's 0.1)")
    ms_scale_pos: float = _opt(2.0, "ms: scale α of the positive pairs (the IAA paper's 2)")
    ms_scale_neg: float = _opt(40.0, "ms: scale β of the negative pairs (the IAA paper's 40)")


@dataclass
class IAAConfig:
    iaa: bool = _opt(False, "add intra-class adaptive augmentation to the pair loss (ms, contrastive, triplet): "
                            "synthetic copies of each embedding drawn from its class's variance")
    iaa_copies: int = _opt(3, "IAA: synthetic copies M of each real embedding")
    iaa_lambda: float = _opt(0.8, "IAA: strength λ of the copies' spread (the paper: 0.5-0.8), decayed to 0.9, 0.75 "
                                  "and 0.6 of it after 40, 60 and 80 % of the epochs")
    iaa_start_epoch: int | None = _opt(None, "IAA: estimate the class statistics for the first time after this many "
                                             "epochs, training with the plain loss before (default: 30 % of "
                                             "--epochs, as the original's 30 of 100; like λ's decay, it follows "
                                             "--epochs)")
    iaa_update_every: int = _opt(2, "IAA: re-estimate the class statistics every this many epochs (an embedding "
                                    "pass over the training images without augmentation)")
    iaa_class_switch: int = _opt(1000, "IAA: up to this many classes, the moving update of the statistics; above, "
                                       "classes with one image in a pass keep their statistics")
    iaa_momentum: float = _opt(0.2, "IAA: a pass's statistics weigh at least 1 - momentum in the moving update")
    neighbour_correction: bool = _opt(True, "IAA: correct the variance of classes with few images from their "
                                            "nearest classes and the global variance (off: the ablation)")
    iaa_neighbours: int = _opt(25, "IAA: nearest classes K of the neighbour correction")
    iaa_beta: float = _opt(0.1, "IAA: β of the correction's share α = 1 / (1 + log(1 + β(n - 1)))")
    iaa_gamma: float = _opt(0.1, "IAA: share γ of the global variance in the correction")
    iaa_tau: int = _opt(40, "IAA: classes with at least this many images are not corrected")
    iaa_sigma_mean: float = _opt(1.0, "IAA: width of the neighbour weights over the distance of class means")
    iaa_sigma_cov: float = _opt(1.0, "IAA: width of the neighbour weights over the distance of class variances")


@dataclass
class MDRConfig:
    mdr: bool = _opt(False, "add multi-level distance regularisation to the metric loss (ms, contrastive, triplet)")
    mdr_weight: float = _opt(0.6, "MDR: weight λ of the regulariser (the paper: 0.6 CUB, 0.2 Cars, 0.1 SOP and "
                                  "In-shop)")
    mdr_level_penalty: float = _opt(0.01, "MDR: weight ν of the penalty on the learnable levels")


# -- self-supervised pretraining and SPICE clustering (issue 17) -------------------------------------------------------
@dataclass
class MoCoConfig:
    moco_queue: int = _opt(65536, "MoCo: negative keys in the queue K (clipped to the number of training images)")
    moco_momentum: float = _opt(0.999, "MoCo: momentum m of the key encoder (key <- m key + (1 - m) query)")
    moco_temperature: float = _opt(0.2, "MoCo: temperature T of the InfoNCE logits")
    moco_dim: int = _opt(128, "MoCo: size of the projected (and L2-normalised) keys and queries")
    mlp: bool = _opt(True, "MoCo v2's two-layer MLP projection (--no-mlp: MoCo v1's single linear layer)")
    shuffle_groups: int = _opt(8, "MoCo shuffle-BN on one device: the key batch runs through the key encoder in this "
                                  "many shuffled sub-batches, each with its own BatchNorm statistics")
    moco_crop_min: float = _opt(0.2, "MoCo aug+: smallest share of the image's area a random crop keeps (MoCo v2: "
                                     "0.2; larger suits tiny images)")


@dataclass
class SpiceConfig:
    num_clusters: int | None = _opt(None, "SPICE: number of clusters C (default: the data set's number of classes)")
    spice_until: str = _opt("semi", "SPICE: run the stages up to this one (pretrain, self, reliable, semi); the stage "
                                    "commands set it", ("pretrain", "self", "reliable", "semi"), role="extendable")
    spice_heads: int = _opt(10, "SPICE-Self: clustering heads H trained side by side (the lowest pseudo-label loss "
                                "chooses one)")
    spice_hidden: int = _opt(512, "SPICE-Self: hidden units of each head's MLP")
    spice_self_epochs: int = _opt(100, "SPICE-Self: epochs of the heads on the frozen backbone")
    spice_self_batch: int = _opt(5000, "SPICE-Self: images of a big batch, pseudo-labelled together (one step each; "
                                       "clipped to the number of images)")
    spice_self_lr: float = _opt(0.005, "SPICE-Self: Adam learning rate of the heads")
    double_softmax: bool = _opt(True, "SPICE-Self: the original's DS-CE (cross-entropy of the softmax outputs); "
                                      "--no-double-softmax: plain cross-entropy on the logits")
    spice_knn: int = _opt(100, "reliable samples: nearest neighbours k in the embedding whose clusters are compared")
    spice_ratio: float = _opt(0.9, "reliable samples: share of the k neighbours that must be in the image's cluster")
    spice_score: float = _opt(0.99, "reliable samples: the image's highest probability must exceed this")
    spice_balance: bool = _opt(True, "reliable samples: cut every cluster to the size of the smallest")
    spice_relax_steps: int = _opt(5, "reliable samples: a cluster without any lowers its thresholds in this many steps "
                                     "towards --spice-min-ratio and --spice-min-score before failing (0: fail at once)")
    spice_min_ratio: float = _opt(0.5, "reliable samples: the lowest neighbour ratio relaxation goes to")
    spice_min_score: float = _opt(0.5, "reliable samples: the lowest score threshold relaxation goes to")
    spice_semi_epochs: int = _opt(100, "SPICE-Semi: epochs (passes over every image as unlabelled)")
    spice_semi_init: str = _opt("scratch", "SPICE-Semi: new weights (the original) or the pretrained backbone",
                                ("scratch", "pretrain"))
    spice_semi_batch: int = _opt(64, "SPICE-Semi: reliable (labelled) images per step")
    spice_semi_lr: float = _opt(0.03, "SPICE-Semi: SGD learning rate (momentum 0.9, weight decay 5e-4, cosine)")
    fixmatch_ratio: int = _opt(7, "SPICE-Semi: unlabelled images per labelled image in a step (FixMatch's mu)")
    fixmatch_threshold: float = _opt(0.95, "SPICE-Semi: a weak view's highest probability that makes it a "
                                           "pseudo-label")
    spice_ema: float = _opt(0.999, "SPICE-Semi: decay of the weights' moving average that is evaluated (0: the "
                                   "weights themselves)")


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
