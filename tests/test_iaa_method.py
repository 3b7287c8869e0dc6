"""The retrieval methods of the engine: ``ms`` against pytorch-metric-learning, ``--iaa`` (when the statistics are
estimated, from what, λ per epoch, resumable noise), ``--mdr`` added to the loss, the paper recipe's pieces (the
embedding layer's learning-rate factor, GAP + GMP), the switches refused where they do not apply, and an end-to-end
class-disjoint run that learns."""

import json
from pathlib import Path

import pytest
import torch
from pytorch_metric_learning import losses, miners
from tiny import tiny_method

from weakdml.cli import main
from weakdml.config import build_config
from weakdml.data.prepare import prepare_data
from weakdml.engine.optim import build_optimizer
from weakdml.engine.tasks import recall_at_1
from weakdml.engine.trainer import load_batch
from weakdml.errors import UserError
from weakdml.losses import MDRLoss, iaa_lambda
from weakdml.losses.class_statistics import class_moments
from weakdml.models.backbones import build_backbone


def tiny(method: str, **overrides):
    m, _ = tiny_method(method, 24, 4, batch_size=8, m_per_class=2, **overrides)
    m.seed_epoch(0)
    m.on_epoch_start(0)
    return m, load_batch(m, next(iter(m.batches(0))))


def test_ms_step_equals_pml_multi_similarity_with_its_miner():
    m, batch = tiny("ms", ms_thresh=0.4, ms_margin=0.2, ms_scale_pos=3.0, ms_scale_neg=30.0)
    z = m.model(batch.images.float() / 255)
    pairs = miners.MultiSimilarityMiner(epsilon=0.2)(z, batch.labels)
    expected = losses.MultiSimilarityLoss(alpha=3.0, beta=30.0, base=0.4)(z, batch.labels, pairs)
    assert m.training_step(batch)["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() > 0


@pytest.mark.parametrize("method", ["ms", "contrastive", "triplet"])
def test_iaa_starts_at_its_epoch_from_unaugmented_embeddings_and_follows_lambdas_decay(method):
    m, batch = tiny(method, iaa=True, iaa_start_epoch=2, iaa_update_every=3, epochs=10, augment="weak")
    plain, _ = tiny(method, epochs=10, augment="weak")
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("iaa.")})
    assert not m.iaa.statistics.ready  # epochs 1-2: the plain loss
    torch.manual_seed(5)
    with_iaa = m.training_step(batch)["loss"]
    torch.manual_seed(5)
    assert with_iaa.item() == pytest.approx(plain.training_step(batch)["loss"].item(), rel=1e-6)
    refreshed = []
    for epoch in range(10):
        before = m.iaa.statistics.amount.sum().item()
        m.on_epoch_start(epoch)
        refreshed.append(m.iaa.statistics.amount.sum().item() > before)
        assert m.iaa.lam == pytest.approx(iaa_lambda(0.8, epoch + 1, 10))
    assert [e for e, r in enumerate(refreshed) if r] == [2, 5, 8]
    m.iaa.statistics.amount.zero_()  # one more estimate, from scratch: its moments must be the images' own
    m.on_epoch_start(2)
    emb = m.embed_all(m.data.labeled)  # eval mode, no augmentation
    _, mean, var = class_moments(emb, m.data.labeled.labels, 4)
    assert torch.allclose(m.iaa.statistics.mean, mean, atol=1e-6)
    assert torch.allclose(m.iaa.statistics.variance, var, atol=1e-6)


def test_iaa_noise_depends_on_seed_and_epoch_only():
    """A resumed run draws the copies of an epoch as the uninterrupted one did."""
    drawn = []
    for _ in range(2):
        m, _batch = tiny("ms", iaa=True, iaa_start_epoch=0)
        m.on_epoch_start(3)
        drawn.append(m.iaa.synthesize(torch.zeros(4, m.model.dim), torch.arange(4)))
    assert torch.equal(*drawn) and drawn[0].abs().sum() > 0


def test_mdr_is_added_to_the_metric_loss():
    m, batch = tiny("ms", mdr=True, mdr_weight=0.3)
    plain, _ = tiny("ms")
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("mdr.")})
    reference = MDRLoss(weight=0.3)
    z = m.model(batch.images.float() / 255)
    step = m.training_step(batch)
    assert step["mdr"].item() == pytest.approx(reference(z).item(), rel=1e-5)
    assert step["loss"].item() == pytest.approx(plain.training_step(batch)["loss"].item() + step["mdr"].item(),
                                                rel=1e-5)


def test_embedding_layer_gets_its_learning_rate_factor():
    m, _ = tiny("ms", mdr=True, embedding_lr_factor=10.0, lr=1e-4)
    groups = {g["name"]: g for g in build_optimizer(m.parameter_groups(), m.cfg.optim).param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4) and groups["embedding"]["lr"] == pytest.approx(1e-3)
    backbone = {id(p) for p in m.model.backbone.parameters()}
    assert {id(p) for p in groups["backbone"]["params"]} == backbone
    after = {id(p) for p in groups["embedding"]["params"]}
    assert id(m.model.projection.weight) in after and id(m.mdr.levels) in after and not after & backbone


def test_avg_max_pooling_adds_global_max_to_global_average():
    net, _ = build_backbone("resnet18", 3, 32, small_stem=True, pooling="avg+max")
    feature_map = {}
    net.layer4.register_forward_hook(lambda module, inputs, out: feature_map.setdefault("x", out))
    x = torch.randn(2, 3, 32, 32)
    features = net.eval()(x)
    fm = feature_map["x"]
    assert torch.allclose(features, fm.mean(dim=(2, 3)) + fm.amax(dim=(2, 3)), atol=1e-5)


@pytest.mark.parametrize("method", ["nngk", "proxy-anchor", "mbdml3"])
def test_iaa_where_it_cannot_apply_is_one_clear_line(method, capsys):
    assert main(["train", "--method", method, "--iaa", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"weakdml: error: --iaa does not apply to --method {method}; it works with ms, contrastive, triplet"


def test_iaa_that_would_never_start_is_refused():
    with pytest.raises(UserError, match="IAA would never start"):
        build_config(overrides={"method": "ms", "iaa": True, "epochs": 5, "iaa_start_epoch": 5})


def test_ms_with_iaa_and_mdr_learns_beyond_raw_pixels_and_transfers_to_unseen_classes(tmp_path):
    """Digits, classes 0-4 trained, 5-9 retrieved. Learning is measured on held-out images of the training classes
    (validation): their Recall@1 must beat the raw pixels'. On the unseen classes the raw pixels are out of reach
    (R@1 0.978 on this split, the untrained network 0.93, a trained one 0.94: docs/results.md, IAA study), so there
    the run must only keep a useful embedding."""
    out = tmp_path / "run"
    args = ["train", "--method", "ms", "--iaa", "--mdr", "--dataset", "digits", "--class-disjoint",
            "--labeled-fraction", "1", "--val-fraction", "0.3", "--monitor", "last", "--epochs", "10",
            "--iaa-start-epoch", "3", "--batch-size", "64", "--out", str(out), "--progress", "off"]
    assert main(args) == 0
    final = json.loads((out / "final_metrics.json").read_text())
    data = prepare_data(build_config(out / "config.yaml"), out / "split.json", needs_labels=True)
    pixels = data.val.load(torch.arange(len(data.val))).flatten(1).float()
    baseline = recall_at_1(pixels, data.val.labels)
    assert final["val_recall@1"] > baseline, (final["val_recall@1"], baseline)
    assert final["test_recall@1"] > 0.85 and final["test_map@r"] > 0.3


def test_validation_classes_leaving_one_training_class_are_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--method", "ms", "--class-disjoint", "--val-classes", "4", "--epochs", "1", "--out", str(out)]
    assert main(args) == 2
    assert "needs labelled images of at least 2 classes, and the training images hold 1" in capsys.readouterr().err
    assert not out.exists()


def test_classes_smaller_than_m_per_class_are_reported(tmp_path, caplog):
    args = ["train", "--method", "ms", "--class-disjoint", "--labels-per-class", "3", "--val-fraction", "0",
            "--m-per-class", "4", "--batch-size", "20", "--epochs", "1", "--out", str(tmp_path / "r"), "--progress",
            "off"]
    assert main(args) == 0
    assert "5 of the 5 training classes have fewer than --m-per-class 4 labelled images: their images repeat" in \
        caplog.text
    assert "retrieval trained on the labels of 15 of the 721 training images (--labels-per-class 3); the retrieval " \
        "benchmarks' protocol trains on all: --labeled-fraction 1" in caplog.text
    caplog.clear()
    args = ["train", "--method", "ms", "--class-disjoint", "--labeled-fraction", "1", "--val-fraction", "0",
            "--epochs", "1", "--out", str(tmp_path / "all"), "--progress", "off"]
    assert main(args) == 0
    assert "training ms on digits (retrieval)" in caplog.text and "retrieval trained on the labels" not in caplog.text


def test_iaa_recipe_configs_are_the_generators_and_build():
    """configs/iaa/ is what scripts/iaa_configs.py writes (so the files cannot drift from it), and each is a valid
    config of its loss, with IAA on exactly in the -iaa files."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("iaa_configs", root / "scripts" / "iaa_configs.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    expected = generator.files()
    written = sorted((root / "configs" / "iaa").glob("*.yaml"))
    assert len(expected) == 24 and written == sorted(root / p for p in expected)
    for path, text in expected.items():
        assert (root / path).read_text() == text
        cfg = build_config(root / path)
        assert cfg.iaa.iaa == path.stem.endswith("-iaa")
        assert (cfg.model.batchnorm, cfg.optim.embedding_lr_factor, cfg.model.embedding_dim) == ("frozen", 10.0, 512)


def test_the_papers_recipe_runs_on_a_cub_folder_with_iaa_and_mdr(tmp_path):
    """configs/iaa/cub200-ms-iaa.yaml (GoogLeNet, frozen BatchNorm, 10x embedding layer, step schedule) for two epochs
    on a tiny CUB-format folder, IAA from the second: the statistics are estimated and Recall@1, 2, 4, 8 reported."""
    from test_retrieval_data import write_cub

    write_cub(tmp_path / "data", {c: 4 for c in (1, 2, 3, 101, 102)})
    run = tmp_path / "run"
    config = Path(__file__).resolve().parents[1] / "configs" / "iaa" / "cub200-ms-iaa.yaml"
    assert main(["train", "--config", str(config), "--data-root", str(tmp_path / "data"), "--mdr", "--epochs", "2",
                 "--iaa-start-epoch", "1", "--input-size", "64", "--batch-size", "12", "--out", str(run),
                 "--progress", "off"]) == 0
    final = json.loads((run / "final_metrics.json").read_text())
    assert all(0 <= final[f"test_recall@{k}"] <= 1 for k in (1, 2, 4, 8))
    state = torch.load(run / "last.pt", weights_only=True)["method"]
    assert state["iaa.statistics.amount"].sum() == 12  # one estimate over the 12 training images
    groups = {g["name"]: g for g in torch.load(run / "last.pt", weights_only=True)["optimizer"]["param_groups"]}
    assert groups["embedding"]["lr"] == pytest.approx(10 * groups["backbone"]["lr"])
