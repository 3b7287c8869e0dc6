"""The config sections of the methods (``nngk``, ``mixup``, ``nst``, ``dml``, ``iaa``, ``mdr``, ``moco``,
``spice``): each method reads its own, beside the general ones of ``weakdml.config``."""

from __future__ import annotations

from dataclasses import dataclass

from weakdml.config_fields import BACKBONES, flag


@dataclass
class NNGKConfig:
    sigma: float = flag(0.3, "Gaussian kernel width (original: 10 on unnormalised 2048-d features; 0.3 suits "
                              "L2-normalised embeddings)")
    learnable_sigma: bool = flag(False, "learn sigma (as log sigma) with the network")
    neighbours: int = flag(200, "K nearest centres used by the kernel classifier")
    update_interval: int = flag(1, "refresh the support bank every this many epochs (original: 5)")


@dataclass
class MixupConfig:
    alpha: float = flag(1.0, "mixing weight λ ~ Beta(alpha, alpha); alpha <= 0 turns mixing off")
    beta: float = flag(1.0, "weight of the clean NNGK term (MbDML1, MbDML3, MbDML4)")
    scale_mixup: float | None = flag(None, "weight of the mixup term (default per method: mbdml1-3 2, mbdml4 1, as "
                                           "in the original README's commands; its argparse default was 0.0001)")
    mixed_neighbours: str = flag("all", "MbDML2-4: a mixed sample is scored against every centre, its K nearest "
                                        "centres, or the un-permuted sample's neighbour list (the original code)",
                                 ("all", "bank", "original"))


@dataclass
class NSTConfig:
    nst_variant: str = flag("teacher-student", "Noisy Student as teacher/student rounds, or the original's online "
                                               "variant (one network labels each unlabelled batch)",
                            ("teacher-student", "online"))
    nst_rounds: int = flag(1, "teacher -> student rounds (each student is the next teacher); with --resume, more "
                              "rounds for a finished run", role="extendable")
    nst_epochs: int | None = flag(None, "epochs of each student (default: --epochs)")
    nst_threshold: float = flag(0.9, "keep an unlabelled image when the teacher's max probability reaches this")
    nst_soft: bool = flag(False, "train students on the teacher's probabilities instead of hard labels")
    nst_balance: bool = flag(True, "spread the pseudo-labelled images evenly over the predicted classes, most "
                                   "confident first (the threshold sets how many)")
    nst_backbone: str | None = flag(None, "the students' backbone (default: the teacher's; Xie et al.'s student is "
                                          "equal or larger)", BACKBONES)
    nst_width: float | None = flag(None, "small-cnn: the students' channel multiplier (default: the teacher's --width)")
    nst_init: str = flag("scratch", "each student starts re-initialised (Xie et al.) or from its teacher's weights "
                                    "(far fewer student epochs needed)", ("scratch", "teacher"))
    nst_dropout: float = flag(0.3, "student noise: dropout before the embedding projection")
    nst_stochastic_depth: float = flag(0.2, "student noise: stochastic-depth drop rate of the last residual block, "
                                            "linearly less for earlier ones (ResNets; Xie et al.: 0.2)")
    nst_augment: str = flag("strong", "student noise: augmentation", ("none", "flip", "weak", "strong"))
    scale_nst: float = flag(1.0, "weight of the pseudo-labelled loss (the original online variant used 2)")
    unlabeled_ratio: int = flag(3, "unlabelled images per labelled image in a step")
    c_tau: float = flag(0.8, "online variant: keep when max p > c_tau x mean max p of the labelled batch")
    nst_start: int = flag(20, "online variant: epoch from which unlabelled images are used (original: 20)")


@dataclass
class DMLConfig:
    m_per_class: int = flag(4, "DML baselines: images per class in a batch (batch-size / m classes per batch)")
    contrastive_pos_margin: float = flag(0.0, "contrastive: positive pairs closer than this cost nothing (PML "
                                              "default)")
    contrastive_neg_margin: float = flag(1.0, "contrastive: negative pairs farther than this cost nothing (PML "
                                              "default)")
    proxy_margin: float = flag(0.1, "proxy-anchor: margin δ (PML default)")
    proxy_alpha: float = flag(32.0, "proxy-anchor: scale α (PML default)")
    centers_per_class: int = flag(10, "soft-triple: centres per class (PML default)")
    soft_triple_la: float = flag(20.0, "soft-triple: scale λ of the class similarities (PML default)")
    soft_triple_gamma: float = flag(0.1, "soft-triple: temperature γ of the soft-max over a class's centres (PML "
                                         "default)")
    soft_triple_margin: float = flag(0.01, "soft-triple: margin δ (PML default)")
    supcon_temperature: float = flag(0.1, "supcon: temperature (PML default)")
    triplet_margin: float = flag(0.05, "triplet: margin of the loss and the miner (PML's loss default)")
    triplet_miner: str = flag("semihard", "triplet: TripletMarginMiner type; 'all' = every triplet that violates "
                                          "the margin (PML's loss without a miner)", ("semihard", "hard", "all"))
    contrastive_distance: str = flag("euclidean", "contrastive: margins on Euclidean distances (PML default) or on "
                                                  "cosine similarities (the IAA paper: --contrastive-pos-margin 0.8 "
                                                  "--contrastive-neg-margin 0.5)", ("euclidean", "cosine"))
    ms_thresh: float = flag(0.5, "ms: similarity threshold λ of the loss (PML's base; the IAA paper's 0.5)")
    ms_margin: float = flag(0.1, "ms: margin ε of the multi-similarity miner (the IAA paper's 0.1)")
    ms_scale_pos: float = flag(2.0, "ms: scale α of the positive pairs (the IAA paper's 2)")
    ms_scale_neg: float = flag(40.0, "ms: scale β of the negative pairs (the IAA paper's 40)")


@dataclass
class IAAConfig:
    iaa: bool = flag(False, "add intra-class adaptive augmentation to the pair loss (ms, contrastive, triplet): "
                            "synthetic copies of each embedding drawn from its class's variance")
    iaa_copies: int = flag(3, "IAA: synthetic copies M of each real embedding")
    iaa_lambda: float = flag(0.8, "IAA: strength λ of the copies' spread (the paper: 0.5-0.8), decayed to 0.9, 0.75 "
                                  "and 0.6 of it after 40, 60 and 80 % of the epochs")
    iaa_start_epoch: int | None = flag(None, "IAA: estimate the class statistics for the first time after this many "
                                             "epochs, training with the plain loss before (default: 30 % of "
                                             "--epochs, as the original's 30 of 100; like λ's decay, it follows "
                                             "--epochs)")
    iaa_update_every: int = flag(2, "IAA: re-estimate the class statistics every this many epochs (an embedding "
                                    "pass over the training images without augmentation)")
    iaa_class_switch: int = flag(1000, "IAA: up to this many classes, the moving update of the statistics; above, "
                                       "classes with one image in a pass keep their statistics")
    iaa_momentum: float = flag(0.2, "IAA: a pass's statistics weigh at least 1 - momentum in the moving update")
    neighbour_correction: bool = flag(True, "IAA: correct the variance of classes with few images from their "
                                            "nearest classes and the global variance (off: the ablation)")
    iaa_neighbours: int = flag(25, "IAA: nearest classes K of the neighbour correction")
    iaa_beta: float = flag(0.1, "IAA: β of the correction's share α = 1 / (1 + log(1 + β(n - 1)))")
    iaa_gamma: float = flag(0.1, "IAA: share γ of the global variance in the correction")
    iaa_tau: int = flag(40, "IAA: classes with at least this many images are not corrected")
    iaa_sigma_mean: float = flag(1.0, "IAA: width of the neighbour weights over the distance of class means")
    iaa_sigma_cov: float = flag(1.0, "IAA: width of the neighbour weights over the distance of class variances")


@dataclass
class MDRConfig:
    mdr: bool = flag(False, "add multi-level distance regularisation to the metric loss (ms, contrastive, triplet)")
    mdr_weight: float = flag(0.6, "MDR: weight λ of the regulariser (the paper: 0.6 CUB, 0.2 Cars, 0.1 SOP and "
                                  "In-shop)")
    mdr_level_penalty: float = flag(0.01, "MDR: weight ν of the penalty on the learnable levels")


# -- self-supervised pretraining and SPICE clustering (issue 17) -------------------------------------------------------
@dataclass
class MoCoConfig:
    moco_queue: int = flag(65536, "MoCo: negative keys in the queue K (clipped to the number of training images)")
    moco_momentum: float = flag(0.999, "MoCo: momentum m of the key encoder (key <- m key + (1 - m) query)")
    moco_temperature: float = flag(0.2, "MoCo: temperature T of the InfoNCE logits")
    moco_dim: int = flag(128, "MoCo: size of the projected (and L2-normalised) keys and queries")
    mlp: bool = flag(True, "MoCo v2's two-layer MLP projection (--no-mlp: MoCo v1's single linear layer)")
    shuffle_groups: int = flag(8, "MoCo shuffle-BN on one device: the key batch runs through the key encoder in this "
                                  "many shuffled sub-batches, each with its own BatchNorm statistics")
    moco_crop_min: float = flag(0.2, "MoCo aug+: smallest share of the image's area a random crop keeps (MoCo v2: "
                                     "0.2; larger suits tiny images)")


@dataclass
class SpiceConfig:
    num_clusters: int | None = flag(None, "SPICE: number of clusters C (default: the data set's number of classes)")
    spice_until: str = flag("semi", "SPICE: run the stages up to this one (pretrain, self, reliable, semi); the stage "
                                    "commands set it", ("pretrain", "self", "reliable", "semi"), role="extendable")
    spice_heads: int = flag(10, "SPICE-Self: clustering heads H trained side by side (the lowest pseudo-label loss "
                                "chooses one)")
    spice_hidden: int = flag(512, "SPICE-Self: hidden units of each head's MLP")
    spice_self_epochs: int = flag(100, "SPICE-Self: epochs of the heads on the frozen backbone")
    spice_self_batch: int | None = flag(None, "SPICE-Self: images of a big batch, pseudo-labelled together (one step "
                                              "each; default: a tenth of the images, at least 50 a cluster and at "
                                              "most 5,000; clipped to the number of images)")
    spice_self_lr: float = flag(0.005, "SPICE-Self: Adam learning rate of the heads")
    double_softmax: bool = flag(True, "SPICE-Self: the original's DS-CE (cross-entropy of the softmax outputs); "
                                      "--no-double-softmax: plain cross-entropy on the logits")
    spice_knn: int = flag(100, "reliable samples: nearest neighbours k in the embedding whose clusters are compared")
    spice_ratio: float = flag(0.9, "reliable samples: share of the k neighbours that must be in the image's cluster")
    spice_score: float = flag(0.99, "reliable samples: the image's highest probability must exceed this")
    spice_balance: bool = flag(True, "reliable samples: cut every cluster to the size of the smallest")
    spice_relax_steps: int = flag(5, "reliable samples: a cluster without any lowers its thresholds in this many steps "
                                     "towards --spice-min-ratio and --spice-min-score before failing (0: fail at once)")
    spice_min_ratio: float = flag(0.5, "reliable samples: the lowest neighbour ratio relaxation goes to")
    spice_min_score: float = flag(0.5, "reliable samples: the lowest score threshold relaxation goes to")
    spice_semi_epochs: int = flag(100, "SPICE-Semi: epochs (passes over every image as unlabelled)")
    spice_semi_init: str = flag("scratch", "SPICE-Semi: new weights (the original) or the pretrained backbone",
                                ("scratch", "pretrain"))
    spice_semi_batch: int = flag(64, "SPICE-Semi: reliable (labelled) images per step")
    spice_semi_lr: float = flag(0.03, "SPICE-Semi: SGD learning rate (momentum 0.9, weight decay 5e-4, cosine)")
    fixmatch_ratio: int = flag(7, "SPICE-Semi: unlabelled images per labelled image in a step (FixMatch's mu)")
    fixmatch_threshold: float = flag(0.95, "SPICE-Semi: a weak view's highest probability that makes it a "
                                           "pseudo-label")
    spice_ema: float = flag(0.999, "SPICE-Semi: decay of the weights' moving average that is evaluated (0: the "
                                   "weights themselves)")
