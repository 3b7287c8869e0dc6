"""Config: defaults, YAML (nested or flat), CLI overrides on top, and clear validation errors."""

from pathlib import Path

import pytest

from weakdml.config import Config, build_config, snapshot_images
from weakdml.errors import UserError


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  dataset: fashion-mnist\n  labeled_fraction: 0.2\noptim:\n  lr: 0.01\nepochs: 7\n")
    cfg = build_config(path, {"lr": "0.5", "milestones": "3,5"})
    assert cfg.data.dataset == "fashion-mnist" and cfg.data.labeled_fraction == 0.2
    assert cfg.train.epochs == 7 and cfg.optim.lr == 0.5 and cfg.optim.milestones == [3, 5]


def test_saved_config_round_trips(tmp_path):
    cfg = build_config(overrides={"sigma": 0.3, "l2_normalize": "true", "embedding_dim": "none"})
    cfg.save(tmp_path / "c.yaml")
    assert build_config(tmp_path / "c.yaml") == cfg
    assert cfg.model.embedding_dim is None and cfg.model.l2_normalize is True


@pytest.mark.parametrize("overrides, message", [
    ({"labeled_fraction": -0.1}, "labeled-fraction must be in"),
    ({"labeled_fraction": 1.5}, "labeled-fraction must be in"),
    ({"epochs": "ten"}, "expects int"),
    ({"backbone": "vgg"}, "must be one of"),
    ({"no_such_thing": 1}, "unknown setting"),
    ({"sigma": -1}, "sigma must be positive"),
    ({"deterministic": "maybe"}, "expects bool"),
    ({"nst_threshold": -0.5}, "nst-threshold must be a probability"),
    ({"nst_stochastic_depth": 1}, "nst-stochastic-depth must be in"),
    ({"scale_mixup": -1}, "scale-mixup must be non-negative"),
    ({"c_tau": 0}, "c-tau must be positive"),
    ({"eval_every": 0}, "eval-every must be at least 1"),
    ({"batchnorm": "off"}, "must be one of train, frozen, eval"),
])
def test_invalid_settings_raise_one_clear_error(overrides, message):
    with pytest.raises(UserError, match=message):
        build_config(overrides=overrides)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        build_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        build_config(tmp_path / "list.yaml")


def test_defaults():
    """The documented defaults: the original's batch 32, K 200, c_tau 0.8 and online start epoch 20; weakdml's own
    σ 0.3 and bank refreshed every epoch (the original's σ 10 and 5 suit unnormalised features, see the README)."""
    cfg = build_config()
    assert cfg == Config()
    assert (cfg.train.batch_size, cfg.nngk.neighbours, cfg.nst.c_tau, cfg.nst.nst_start) == (32, 200, 0.8, 20)
    assert (cfg.nngk.sigma, cfg.nngk.update_interval, cfg.mixup.scale_mixup) == (0.3, 1, None)
    assert (cfg.data.labeled_fraction, cfg.data.val_fraction, cfg.data.dataset) == (0.1, 0.2, "digits")


def test_paths_are_saved_absolute(tmp_path, monkeypatch):
    """A run started with relative paths is evaluated and resumed from any folder."""
    monkeypatch.chdir(tmp_path)
    cfg = build_config(overrides={"dataset": "folder", "data_root": "data", "pretrained": "~/w.pt"})
    assert cfg.data.data_root == str(tmp_path / "data")
    assert cfg.model.pretrained == str(Path.home() / "w.pt")
    assert build_config(overrides={"data_root": "/abs/data"}).data.data_root == "/abs/data"


def test_snapshots_default_to_small_cnn_only():
    """Embedding snapshots cost a test-set pass per evaluated epoch: on by default (1000 images) for small-cnn only."""
    assert snapshot_images(build_config()) == 1000
    assert snapshot_images(build_config(overrides={"backbone": "resnet50"})) == 0
    assert snapshot_images(build_config(overrides={"backbone": "resnet50", "snapshot_images": 64})) == 64
