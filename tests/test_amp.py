"""Mixed precision: --amp's modes (and the booleans earlier versions wrote); what stays in float32 under autocast (the
MoCo loss, the augmentations, SPICE's prototype similarities); every method trained under bfloat16 autocast. All
checked with the CPU's bfloat16 autocast, which `--amp bf16` turns on there, as `--amp auto` does on a recent GPU."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny import TINY_MOCO, TINY_SPICE, metric_rows

from weakdml.config import build_config
from weakdml.data.augment import augment
from weakdml.data.augment_contrastive import aug_plus
from weakdml.engine import cluster as cluster_module
from weakdml.engine import run as run_module
from weakdml.engine.trainer import amp_dtype
from weakdml.errors import UserError
from weakdml.methods import METHODS
from weakdml.selfsup.moco import moco_loss
from weakdml.spice.pseudo_labels import prototype_pseudo_labels

IN_BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def test_amp_modes_and_the_booleans_of_earlier_config_files(tmp_path: Path) -> None:
    assert build_config().train.amp == "auto"
    old = tmp_path / "config.yaml"
    old.write_text("train:\n  amp: true\n")
    assert build_config(old).train.amp == "auto"
    old.write_text("train:\n  amp: false\n")
    assert build_config(old).train.amp == "off"
    assert build_config(overrides={"amp": "fp16"}).train.amp == "fp16"
    with pytest.raises(UserError, match="must be one of auto, bf16, fp16, off"):
        build_config(overrides={"amp": "fp8"})
    for mode in ("auto", "fp16", "off"):
        assert amp_dtype(mode, torch.device("cpu")) is None  # the CPU trains in float32 unless asked for bf16
    assert amp_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    for mode in ("auto", "bf16", "fp16", "off"):
        assert amp_dtype(mode, torch.device("mps")) is None  # other devices train in float32
    assert amp_dtype("off", torch.device("cuda")) is None


@pytest.mark.parametrize(("capability", "auto"), [((7, 5), torch.float16), ((8, 0), torch.bfloat16)])
def test_amp_on_a_gpu_follows_that_gpus_bfloat16_support(capability, auto, monkeypatch):
    """auto is bfloat16 on GPUs of compute capability 8 and above, else float16 with loss scaling; the capability
    asked is the run's GPU's (cuda:1 here), not the current one's."""
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: asked.append(device) or capability)
    assert amp_dtype("auto", torch.device("cuda:1")) == auto
    assert amp_dtype("fp16", torch.device("cuda:1")) == torch.float16
    assert asked == [torch.device("cuda:1")] * 2
    if auto == torch.float16:
        with pytest.raises(UserError, match="does not support bfloat16"):
            amp_dtype("bf16", torch.device("cuda:1"))
    else:
        assert amp_dtype("bf16", torch.device("cuda:1")) == torch.bfloat16


def test_the_moco_loss_is_float32_under_autocast() -> None:
    g = torch.Generator().manual_seed(0)
    q, k = (F.normalize(torch.randn(16, 32, generator=g), dim=1) for _ in range(2))
    queue = F.normalize(torch.randn(500, 32, generator=g), dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = moco_loss(q.bfloat16(), k.bfloat16(), queue, 0.07)
        q16, k16 = q.bfloat16(), k.bfloat16()
        in_bf16 = F.cross_entropy(torch.cat([(q16 * k16).sum(1, keepdim=True), q16 @ queue.T], 1) / 0.07,
                                  torch.zeros(16, dtype=torch.long))  # the logits as autocast would compute them
    assert mixed.dtype == torch.float32
    reference = moco_loss(q16.float(), k16.float(), queue, 0.07)  # only the inputs' rounding remains
    assert mixed.item() == pytest.approx(reference.item(), rel=1e-6)
    assert abs(in_bf16.item() - reference.item()) > 1e-4  # what computing the logits in bfloat16 would cost


@pytest.mark.parametrize("channels", [1, 3])
def test_augmentations_give_float32_views_under_autocast_equal_to_those_outside(channels):
    """The views are the same pixels inside bfloat16 autocast as outside it. Under autocast the aug+ blur's
    convolutions returned bfloat16 rows that could not be written into the float32 batch ("Index put requires the
    source and destination dtypes match"), so every MoCo and SPICE run failed at its first step on a GPU; and
    RandAugment's rotations and shears moved pixels by their sampling grid's rounding."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, channels, 32, 32), dtype=torch.uint8, generator=g)
    views = {
        "aug+": lambda: aug_plus(images, torch.Generator().manual_seed(1)),
        "strong": lambda: augment(images, "strong", True, torch.Generator().manual_seed(1)),
        "retrieval": lambda: augment(images, "retrieval", True, torch.Generator().manual_seed(1), crop=24),
    }
    for name, view in views.items():
        outside = view()
        with torch.autocast(**IN_BF16):
            inside = view()
        assert inside.dtype == torch.float32, name
        assert torch.equal(inside, outside), name


def test_prototype_pseudo_labels_rank_in_float32_under_autocast():
    """SPICE-Self's nearest images of each prototype are chosen on float32 similarities inside autocast: the same
    selection as outside it (in bfloat16, about three significant digits, near-equal similarities would tie)."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 600, 5, generator=g).softmax(-1)
    features = F.normalize(torch.randn(600, 32, generator=g), dim=1)
    outside = prototype_pseudo_labels(scores, features)
    with torch.autocast(**IN_BF16):
        inside = prototype_pseudo_labels(scores, features)
        # as SPICE-Self gives them under the CPU's autocast, whose softmax stays in bfloat16: only their rounding
        from_bf16 = prototype_pseudo_labels(scores.bfloat16(), features.bfloat16())
    assert torch.equal(inside.indices.sort(1).values, outside.indices.sort(1).values)
    rounded = prototype_pseudo_labels(scores.bfloat16().float(), features.bfloat16().float())
    assert torch.equal(from_bf16.indices.sort(1).values, rounded.indices.sort(1).values)


# one epoch of each, on digits at 8 px; MoCo and SPICE with the tiny settings of their own tests
BF16_RUNS = {name: {"method": name, "epochs": 1, "nst_epochs": 1, "labeled_fraction": 0.5, "input_size": 8,
                    "snapshot_images": 0, "progress": "off"} for name, method in METHODS.items() if method.needs_labels}
BF16_RUNS["moco"] = {**TINY_MOCO, "epochs": 1}
BF16_RUNS["iaa"] = {**BF16_RUNS["ms"], "iaa": True, "iaa_start_epoch": 0, "class_disjoint": True}
BF16_RUNS["mdr"] = {**BF16_RUNS["contrastive"], "mdr": True, "class_disjoint": True}


@pytest.mark.parametrize("name", sorted([*BF16_RUNS, "spice"]))
def test_every_method_trains_under_bfloat16_autocast(name, tmp_path, caplog):
    """`--amp bf16` on the CPU: every method's steps run in bfloat16 autocast, as `--amp auto` runs them on a
    recent GPU, and train with finite losses (SPICE: each of its four stages); the run says so."""
    caplog.set_level(logging.INFO, logger="weakdml")
    if name == "spice":
        run_dir = cluster_module.cluster(build_config(overrides={**TINY_SPICE, "amp": "bf16",
                                                                 "out": str(tmp_path / "run")})).run_dir
    else:
        run_dir = run_module.train(build_config(overrides={**BF16_RUNS[name], "amp": "bf16",
                                                           "out": str(tmp_path / "run")})).run_dir
    rows = metric_rows(run_dir)
    assert rows and all(math.isfinite(row["train_loss"]) for row in rows), rows
    assert "device cpu (bfloat16 autocast)" in caplog.text
    if name == "spice":
        assert {row["stage"] for row in rows} == {0, 1, 2}  # pretrain, self and semi trained (reliable computes)
