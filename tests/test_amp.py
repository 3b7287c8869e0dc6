"""Mixed precision: --amp's modes (and the booleans earlier versions wrote), and the losses that stay in float32
under autocast (checked with the CPU's bfloat16 autocast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from weakdml.config import build_config
from weakdml.engine.trainer import amp_dtype
from weakdml.errors import UserError
from weakdml.selfsup.moco import moco_loss


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
    for mode in ("auto", "bf16", "fp16", "off"):
        assert amp_dtype(mode, torch.device("cpu")) is None  # other devices train in float32
    assert amp_dtype("off", torch.device("cuda")) is None


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
