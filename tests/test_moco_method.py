"""The ``moco`` method through the engine (``weakdml pretrain``): every image in each epoch without a label, exact
resume (queue and key encoder are checkpointed), learning over random weights; ``--pretrained RUN_DIR`` starts any
method's backbone from such a run, and refuses one that does not fit."""

import numpy as np
import pytest
import torch
from tiny import TINY_MOCO, Interrupt

from weakdml.config import build_config
from weakdml.data.prepare import prepare_data
from weakdml.engine import run as run_module
from weakdml.engine import trainer as trainer_module
from weakdml.engine.checkpoint import load_checkpoint, save_atomic
from weakdml.engine.cluster import run_stage
from weakdml.engine.embed import embed_run
from weakdml.engine.stages import build_method
from weakdml.engine.trainer import Trainer
from weakdml.errors import UserError
from weakdml.methods.moco import MoCoPretraining
from weakdml.methods.nngk import NNGK


@pytest.fixture(scope="module")
def moco_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("moco") / "run"
    run_module.train(build_config(overrides={**TINY_MOCO, "epochs": 2, "out": str(out)}))
    return out


def test_an_epoch_is_every_training_image_once_in_full_batches():
    cfg = build_config(overrides={**TINY_MOCO, "batch_size": 100})
    data = prepare_data(cfg, needs_labels=False)
    method = build_method(cfg, MoCoPretraining, data, torch.device("cpu"))
    method.seed_epoch(0)
    batches = list(method.batches(0))
    n_labeled, n = len(data.train.labeled), len(data.train.labeled) + len(data.train.unlabeled)
    seen = torch.cat([torch.cat([b.index, b.unlabeled_index + n_labeled]) for b in batches])
    assert all(len(b.index) + len(b.unlabeled_index) == 100 for b in batches) and len(batches) == n // 100
    assert len(seen.unique()) == len(seen) == n // 100 * 100
    assert method.moco.queue.keys.shape == (min(512, n), 128)  # clipped to the data size: min(K, N)
    with pytest.raises(UserError, match="--embedding-dim 0"):
        build_method(build_config(overrides={**TINY_MOCO, "embedding_dim": 64}), MoCoPretraining, data,
                     torch.device("cpu"))


def test_sync_batchnorm_is_refused_for_moco_under_torchrun(monkeypatch):
    """SyncBatchNorm would pool the key encoder's statistics over the processes, undoing shuffle-BN (and with
    shuffle groups that do not divide among the processes, its collectives would not match and hang)."""
    cfg = build_config(overrides={**TINY_MOCO, "sync_batchnorm": True})
    method = build_method(cfg, MoCoPretraining, prepare_data(cfg, needs_labels=False), torch.device("cpu"))
    monkeypatch.setattr(trainer_module.dist, "world_size", lambda: 2)
    with pytest.raises(UserError, match="shuffle-BN"):
        trainer_module.distributed(method, cfg)


def test_pretraining_resumes_exactly_with_its_queue_and_key_encoder(tmp_path, moco_run, monkeypatch):
    original = Trainer._train_epoch

    def stop_in_second(self, epoch, quiet):
        if epoch == 1:
            raise Interrupt
        return original(self, epoch, quiet)

    monkeypatch.setattr(Trainer, "_train_epoch", stop_in_second)
    with pytest.raises(Interrupt):
        run_module.train(build_config(overrides={**TINY_MOCO, "epochs": 2, "out": str(tmp_path / "r")}))
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    run_module.resume(tmp_path / "r")
    resumed, straight = (load_checkpoint(d / "last.pt")["method"] for d in (tmp_path / "r", moco_run))
    assert any(k.startswith("moco.queue.") for k in straight) and any(k.startswith("moco.key_encoder.")
                                                                      for k in straight)
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


def test_pretraining_improves_the_weighted_knn_accuracy_over_random_weights(tmp_path):
    """Over three seeds: one 5-epoch run on 360 test images moves by several images with any change of rounding."""
    gains = []
    for seed in range(3):
        cfg = build_config(overrides={**TINY_MOCO, "epochs": 5, "lr": 0.06, "seed": seed,
                                      "out": str(tmp_path / f"r{seed}")})
        data = prepare_data(cfg, needs_labels=False)
        random_weights = build_method(cfg, MoCoPretraining, data, torch.device("cpu"))
        scores = random_weights.predict_all(data.test)
        before = (scores.argmax(1) == data.test.labels).float().mean().item()
        after = run_module.train(cfg).metrics["test_accuracy"]  # the same weighted kNN over the labelled images
        gains.append(after - before)
    # measured +0.04 / +0.16 / +0.12 (mean +0.10; 5 epochs, 8 px, 1 thread); random weights score 0.64-0.67
    assert min(gains) > 0 and np.mean(gains) >= 0.06, gains


def test_pretrained_run_directory_starts_the_backbone_of_another_method(moco_run, tmp_path):
    cfg = build_config(overrides={"input_size": 8, "pretrained": str(moco_run)})
    data = prepare_data(cfg)
    method = build_method(cfg, NNGK, data, torch.device("cpu"))
    best = load_checkpoint(moco_run / "best.pt")["method"]
    own = method.model.backbone.state_dict()
    assert own and all(torch.equal(value, best[f"model.backbone.{key}"]) for key, value in own.items())
    scratch = build_method(build_config(overrides={"input_size": 8}), NNGK, data, torch.device("cpu"))
    assert not torch.equal(scratch.model.backbone.state_dict()["features.0.weight"], own["features.0.weight"])

    with pytest.raises(UserError, match="has --width 1.0, this run 2.0"):
        build_method(build_config(overrides={"input_size": 8, "width": 2, "pretrained": str(moco_run)}), NNGK, data,
                     torch.device("cpu"))
    with pytest.raises(UserError, match="has --backbone small-cnn, this run resnet18"):
        run_module.train(build_config(overrides={"input_size": 8, "backbone": "resnet18", "pretrained": str(moco_run),
                                                 "out": str(tmp_path / "r")}))
    assert not (tmp_path / "r").exists()  # refused before anything is written
    colour = tmp_path / "colour"
    colour.mkdir()
    (colour / "config.yaml").write_text((moco_run / "config.yaml").read_text())
    state = load_checkpoint(moco_run / "best.pt")
    state["method"]["model.mean"] = torch.zeros(1, 3, 1, 1)
    save_atomic(state, colour / "best.pt")
    with pytest.raises(UserError, match="trained on 3-channel images, these have 1"):
        build_method(build_config(overrides={"input_size": 8, "pretrained": str(colour)}), NNGK, data,
                     torch.device("cpu"))
    with pytest.raises(UserError, match="no weakdml run with a trained model"):
        build_method(build_config(overrides={"pretrained": str(tmp_path)}), NNGK, data, torch.device("cpu"))


def test_embed_writes_every_images_pooled_features_with_its_id(moco_run, tmp_path):
    out, n = embed_run(moco_run, tmp_path / "emb")
    embeddings, ids = np.load(out / "embeddings.npy"), (out / "ids.txt").read_text().splitlines()
    assert embeddings.shape == (n, 256) == (1797, 256) and embeddings.dtype == np.float32
    assert ids[0] == "train/0" and ids[1437] == "test/0" and len(ids) == n
    _, data, method, _ = run_module.load_run(moco_run)
    # moco embeds with the pooled features (--embedding-dim 0), L2-normalised: the run's own embedding of the test
    torch.testing.assert_close(torch.from_numpy(embeddings[1437:]), method.embed_all(data.test))
    with pytest.raises(UserError, match="not a weakdml run directory"):
        embed_run(tmp_path)


def test_cluster_self_on_a_pretraining_run_starts_a_clustering_run_from_its_backbone(moco_run, tmp_path):
    with pytest.raises(UserError, match="is a moco run, not a clustering one: .*weakdml cluster-self"):
        run_stage(moco_run, "reliable", {})
    summary = run_stage(moco_run, "self", {"num_clusters": 10, "spice_self_epochs": 2, "spice_self_batch": 500,
                                           "out": str(tmp_path / "c"), "progress": "off"})
    run_dir = summary.run_dir
    assert [p.name for p in sorted(run_dir.glob("[0-9][0-9]-*"))] == ["00-self"]  # no pretraining stage of its own
    cfg = build_config(run_dir / "config.yaml")
    assert cfg.model.pretrained == str(moco_run) and cfg.data.labeled_fraction == 0 and cfg.data.input_size == 8
    heads = load_checkpoint(run_dir / "00-self" / "best.pt")["method"]
    pretrained = load_checkpoint(moco_run / "best.pt")["method"]
    assert all(torch.equal(v, pretrained[k]) for k, v in heads.items() if k.startswith("model.backbone."))
    assert sum(summary.metrics["cluster_sizes"]) == summary.metrics["images"] == 1437
