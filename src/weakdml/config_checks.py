"""Range checks of a config that its types cannot express; each failure says what to change."""

from __future__ import annotations

from typing import TYPE_CHECKING

from weakdml.errors import UserError

if TYPE_CHECKING:
    from weakdml.config import Config


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def validate(config: Config) -> None:
    """Range checks that a type cannot express; each failure says what to change."""
    d, m, o, t, n = config.data, config.model, config.optim, config.train, config.nngk
    _check(0 <= d.labeled_fraction <= 1, f"--labeled-fraction must be in [0, 1], got {d.labeled_fraction}")
    _check(d.val_classes >= 0 and d.val_classes != 1, f"--val-classes must be 0 or at least 2 (with one class every "
           f"neighbour of a validation image is relevant), got {d.val_classes}")
    _check(all(c >= 0 for c in d.train_classes),
           f"--train-classes are class indices (0, 1, ...), got {d.train_classes}")
    _check(d.labels_per_class is None or d.labels_per_class >= 1,
           f"--labels-per-class must be at least 1, got {d.labels_per_class}")
    _check(0 <= d.val_fraction < 1, f"--val-fraction must be in [0, 1), got {d.val_fraction}")
    _check(d.input_size is None or d.input_size >= 4, f"--input-size must be at least 4, got {d.input_size}")
    _check(m.embedding_dim is None or m.embedding_dim >= 0, "--embedding-dim must be positive (or 0 for none)")
    _check(0 <= m.dropout < 1, f"--dropout must be in [0, 1), got {m.dropout}")
    _check(0 <= m.stochastic_depth < 1, f"--stochastic-depth must be in [0, 1), got {m.stochastic_depth}")
    for flag, width, backbone in (("--width", m.width, m.backbone),
                                  ("--nst-width", config.nst.nst_width, config.nst.nst_backbone or m.backbone)):
        _check(width is None or width > 0, f"{flag} must be positive, got {width}")
        _check(width in (None, 1) or backbone == "small-cnn", f"{flag} scales small-cnn only, not {backbone}")
    _check(d.dataset == "folder" or not (d.train_dir or d.test_dir or d.im_ext),
           f"--train-dir, --test-dir and --im-ext read a folder data set: add --dataset folder (not {d.dataset})")
    _check(o.lr > 0, f"--lr must be positive, got {o.lr}")
    _check(o.momentum >= 0, f"--momentum must be non-negative, got {o.momentum}")
    _check(o.weight_decay >= 0, f"--weight-decay must be non-negative, got {o.weight_decay}")
    _check(o.gamma > 0, f"--gamma must be positive (it multiplies the learning rate), got {o.gamma}")
    _check(all(m >= 0 for m in o.milestones), f"--milestones must be epochs (non-negative), got {o.milestones}")
    _check(t.epochs >= 1, f"--epochs must be at least 1, got {t.epochs}")
    _check(t.batch_size >= 2, f"--batch-size must be at least 2, got {t.batch_size}")
    _check(t.eval_batch_size >= 1, f"--eval-batch-size must be at least 1, got {t.eval_batch_size}")
    _check(0 <= t.seed < 2**32, f"--seed must be in [0, 2^32 - 1], got {t.seed}")
    _check(d.workers >= 0, f"--workers must be non-negative, got {d.workers}")
    _check(t.eval_every >= 1, f"--eval-every must be at least 1, got {t.eval_every}")
    _check(o.warmup_epochs >= 0, f"--warmup-epochs must be non-negative, got {o.warmup_epochs}")
    _check(t.snapshot_images is None or t.snapshot_images >= 0,
           f"--snapshot-images must be non-negative, got {t.snapshot_images}")
    _check(n.sigma > 0, f"--sigma must be positive, got {n.sigma}")
    _check(n.neighbours >= 1, f"--neighbours must be at least 1, got {n.neighbours}")
    _check(n.update_interval >= 1, f"--update-interval must be at least 1, got {n.update_interval}")
    s = config.nst
    _check(s.nst_rounds >= 0, f"--nst-rounds must be non-negative, got {s.nst_rounds}")
    _check(s.nst_epochs is None or s.nst_epochs >= 1, f"--nst-epochs must be at least 1, got {s.nst_epochs}")
    _check(0 <= s.nst_dropout < 1, f"--nst-dropout must be in [0, 1), got {s.nst_dropout}")
    _check(0 <= s.nst_stochastic_depth < 1, f"--nst-stochastic-depth must be in [0, 1), got {s.nst_stochastic_depth}")
    _check(s.nst_threshold >= 0, f"--nst-threshold must be a probability (above 1 keeps none), got {s.nst_threshold}")
    _check(s.c_tau > 0, f"--c-tau must be positive, got {s.c_tau}")
    _check(s.scale_nst >= 0, f"--scale-nst must be non-negative, got {s.scale_nst}")
    _check(config.mixup.beta >= 0, f"--beta must be non-negative, got {config.mixup.beta}")
    _check(config.mixup.scale_mixup is None or config.mixup.scale_mixup >= 0,
           f"--scale-mixup must be non-negative, got {config.mixup.scale_mixup}")
    _check(s.unlabeled_ratio >= 1, f"--unlabeled-ratio must be at least 1, got {s.unlabeled_ratio}")
    dml = config.dml
    _check(dml.m_per_class >= 2, f"--m-per-class must be at least 2 (pairs need positives), got {dml.m_per_class}")
    _check(dml.centers_per_class >= 1, f"--centers-per-class must be at least 1, got {dml.centers_per_class}")
    _check(dml.supcon_temperature > 0, f"--supcon-temperature must be positive, got {dml.supcon_temperature}")
    _check(m.pooling == "avg" or m.backbone != "small-cnn", "--pooling avg+max is for the ResNets and GoogLeNet; "
           "small-cnn pools by average only")
    _check(o.embedding_lr_factor > 0, f"--embedding-lr-factor must be positive, got {o.embedding_lr_factor}")
    _check_iaa(config)

    mo, sp = config.moco, config.spice
    _check(mo.moco_queue >= 1, f"--moco-queue must be at least 1, got {mo.moco_queue}")
    _check(0 <= mo.moco_momentum < 1, f"--moco-momentum must be in [0, 1), got {mo.moco_momentum}")
    _check(mo.moco_temperature > 0, f"--moco-temperature must be positive, got {mo.moco_temperature}")
    _check(mo.moco_dim >= 1 and mo.shuffle_groups >= 1, "--moco-dim and --shuffle-groups must be at least 1")
    _check(0 < mo.moco_crop_min <= 1, f"--moco-crop-min must be in (0, 1], got {mo.moco_crop_min}")
    _check(sp.num_clusters is None or sp.num_clusters >= 2, f"--num-clusters must be at least 2, got {sp.num_clusters}")
    for flag, value in (("--spice-heads", sp.spice_heads), ("--spice-hidden", sp.spice_hidden),
                        ("--spice-self-epochs", sp.spice_self_epochs), ("--spice-semi-epochs", sp.spice_semi_epochs),
                        ("--spice-knn", sp.spice_knn), ("--fixmatch-ratio", sp.fixmatch_ratio)):
        _check(value >= 1, f"{flag} must be at least 1, got {value}")
    _check((sp.spice_self_batch is None or sp.spice_self_batch >= 2) and sp.spice_semi_batch >= 2,
           "--spice-self-batch and --spice-semi-batch must be at least 2")
    _check(sp.spice_relax_steps >= 0, f"--spice-relax-steps must be non-negative, got {sp.spice_relax_steps}")
    _check(0 <= sp.spice_ema < 1, f"--spice-ema must be in [0, 1), got {sp.spice_ema}")
    _check(sp.spice_self_lr > 0 and sp.spice_semi_lr > 0, "--spice-self-lr and --spice-semi-lr must be positive")


def _check_iaa(config: Config) -> None:
    i, epochs = config.iaa, config.train.epochs
    _check(i.iaa_copies >= 1, f"--iaa-copies must be at least 1, got {i.iaa_copies}")
    _check(i.iaa_lambda >= 0, f"--iaa-lambda must be non-negative, got {i.iaa_lambda}")
    _check(i.iaa_start_epoch is None or i.iaa_start_epoch >= 0,
           f"--iaa-start-epoch must be non-negative, got {i.iaa_start_epoch}")
    _check(not i.iaa or i.iaa_start_epoch is None or i.iaa_start_epoch < epochs,
           f"--iaa-start-epoch {i.iaa_start_epoch} is not below --epochs {epochs}: IAA would never start; lower "
           f"--iaa-start-epoch")
    _check(i.iaa_update_every >= 1, f"--iaa-update-every must be at least 1, got {i.iaa_update_every}")
    _check(0 <= i.iaa_momentum < 1, f"--iaa-momentum must be in [0, 1), got {i.iaa_momentum}")
    _check(i.iaa_neighbours >= 1 and i.iaa_tau >= 1, "--iaa-neighbours and --iaa-tau must be at least 1")
    _check(i.iaa_beta >= 0 and 0 <= i.iaa_gamma <= 1, "--iaa-beta must be non-negative and --iaa-gamma in [0, 1]")
    _check(i.iaa_sigma_mean > 0 and i.iaa_sigma_cov > 0, "--iaa-sigma-mean and --iaa-sigma-cov must be positive")
    m = config.mdr
    _check(m.mdr_weight >= 0 and m.mdr_level_penalty >= 0, "--mdr-weight and --mdr-level-penalty must be non-negative")
