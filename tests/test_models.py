"""Backbones and the embedding network: shapes, torchvision's ResNet features, local pretrained weights, frozen
BatchNorm, stochastic depth."""

import glob

import pytest
import torch

from weakdml.compat import import_torchvision
from weakdml.config import ModelConfig, build_config
from weakdml.errors import UserError
from weakdml.models.backbones import DropPath
from weakdml.models.embedding import EmbeddingNet
from weakdml.models.pretrained import load_pretrained


@pytest.mark.parametrize("backbone, channels, size", [("small-cnn", 1, 16), ("resnet18", 3, 32),
                                                      ("resnet50", 1, 32), ("googlenet", 3, 64)])
def test_backbones_embed(backbone, channels, size):
    net = EmbeddingNet(ModelConfig(backbone=backbone, embedding_dim=32, l2_normalize=True), channels, size).eval()
    out = net(torch.rand(2, channels, size, size))
    assert out.shape == (2, 32) and torch.allclose(out.norm(dim=1), torch.ones(2))


def test_resnet_features_are_torchvisions_pooled_features_of_the_normalised_input():
    """With its weights, the standard-stem resnet18 backbone computes what torchvision's resnet18 computes up to the
    average pool, on (x - mean) / std; without L2 normalisation the embedding is the plain projection."""
    g = torch.Generator().manual_seed(0)
    reference = import_torchvision().models.resnet18(weights=None).eval()
    reference.fc = torch.nn.Identity()
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    net = EmbeddingNet(ModelConfig(backbone="resnet18", small_stem=False, embedding_dim=8, l2_normalize=False), 3, 64,
                       mean, std).eval()
    net.backbone.load_state_dict(reference.state_dict(), strict=False)
    x = torch.rand(2, 3, 64, 64, generator=g)
    expected = reference((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
    torch.testing.assert_close(net.features(x), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net(x), net.projection(expected), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(net(x).norm(dim=1), torch.ones(2))


def test_imagenet_resnet_state_dict_loads_with_standard_stem(tmp_path):
    reference = import_torchvision().models.resnet18(weights=None)
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "w.pth")
    net = EmbeddingNet(ModelConfig(backbone="resnet18", small_stem=False), 3, 32)
    report = load_pretrained(net.backbone, str(tmp_path / "w.pth"))
    assert "missing 0" in report
    torch.testing.assert_close(net.backbone.conv1.weight, reference.conv1.weight)
    small = EmbeddingNet(ModelConfig(backbone="resnet18"), 3, 32)  # 3x3 stem: conv1 cannot take 7x7 weights
    with pytest.raises(UserError, match="shapes differ"):
        load_pretrained(small.backbone, str(tmp_path / "w.pth"))
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="none of its keys"):
        load_pretrained(net.backbone, str(tmp_path / "other.pth"))
    with pytest.raises(UserError, match="not found"):
        load_pretrained(net.backbone, str(tmp_path / "missing.pth"))


def test_frozen_batchnorm_keeps_statistics_and_stochastic_depth_is_train_only():
    net = EmbeddingNet(ModelConfig(backbone="resnet18", batchnorm="frozen", stochastic_depth=0.5), 3, 32).train()
    bn = net.backbone.bn1
    before = bn.running_mean.clone()
    net(torch.rand(4, 3, 32, 32) * 5)
    assert torch.equal(bn.running_mean, before) and not bn.weight.requires_grad
    net.eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(net(x), net(x))


def test_eval_batchnorm_keeps_statistics_but_learns_its_affine_parameters():
    """--batchnorm eval (the original MbDML code): in training, BatchNorm normalises by its initial statistics (0 and
    1), leaves them alone, and its scale and shift get gradients; --batchnorm train recomputes the statistics."""
    net = EmbeddingNet(ModelConfig(backbone="resnet18", batchnorm="eval", embedding_dim=0), 3, 32).train()
    x = torch.rand(4, 3, 32, 32)
    net(x).sum().backward()
    bn = net.backbone.bn1
    assert torch.equal(bn.running_mean, torch.zeros(64)) and torch.equal(bn.running_var, torch.ones(64))
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
    torch.testing.assert_close(net(x), net.eval()(x))
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    net.recalibrate_batchnorm(images, batch_size=4)  # a no-op for eval BatchNorm
    assert torch.equal(bn.running_mean, torch.zeros(64))
    trained = EmbeddingNet(ModelConfig(backbone="resnet18", embedding_dim=0), 3, 32)
    trained.recalibrate_batchnorm(images, batch_size=6)  # one batch: its statistics
    normalised = (images.float() / 255 - trained.mean) / trained.std
    stem = trained.backbone.conv1(normalised)  # the first BatchNorm's input (6, 64, 16, 16)
    torch.testing.assert_close(trained.backbone.bn1.running_mean, stem.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(trained.backbone.bn1.running_var, stem.transpose(0, 1).reshape(64, -1).var(1))
    assert trained.backbone.bn1.momentum == 0.1 and trained.training  # as it was


def test_grey_as_rgb_and_half_normalisation_are_the_original_codes_input():
    """Grey images fed as three equal channels, normalised by 0.5 and 0.5, embed exactly as a three-channel network
    embeds the RGB copies of the images normalised so (torchvision's Normalize(0.5, 0.5))."""
    torch.manual_seed(0)
    grey = EmbeddingNet(ModelConfig(backbone="resnet18", grey_as_rgb=True, input_norm="half"), 1, 32,
                        torch.tensor([0.3]), torch.tensor([0.2])).eval()
    rgb = EmbeddingNet(ModelConfig(backbone="resnet18"), 3, 32).eval()
    half = torch.full((1, 3, 1, 1), 0.5)
    rgb.load_state_dict(grey.state_dict() | {"mean": half, "std": half})
    images = torch.rand(2, 1, 32, 32)
    assert grey.backbone.conv1.in_channels == 3 and torch.equal(grey.mean.flatten(), torch.tensor([0.5]))
    torch.testing.assert_close(grey(images), rgb(images.expand(-1, 3, -1, -1)))


def test_stochastic_depth_keeps_torchvision_keys_and_its_rates_grow_with_depth():
    """Drop paths are hooks: the state dict is torchvision's (so ImageNet weights load), the last block's rate is the
    one given and earlier blocks' rates fall linearly, and a rate of 0 makes training-mode outputs deterministic."""
    net = EmbeddingNet(ModelConfig(backbone="resnet18", embedding_dim=0, stochastic_depth=0.5), 3, 32)
    reference = import_torchvision().models.resnet18(weights=None).state_dict()
    assert set(net.backbone.state_dict()) == {k for k in reference if not k.startswith("fc.")}
    rates = [m.p for m in net.modules() if isinstance(m, DropPath)]
    assert len(rates) == 8 and rates[-1] == pytest.approx(0.5) and rates[0] == pytest.approx(0.5 / 8)
    assert rates == sorted(rates)
    net.train()
    for module in net.modules():  # BatchNorm in eval mode: only the drop paths are random
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    x = torch.rand(4, 3, 32, 32)
    assert not torch.equal(net(x), net(x))
    for module in net.modules():
        if isinstance(module, DropPath):
            module.p = 0.0
    assert torch.equal(net(x), net(x))


def test_every_shipped_config_is_valid():
    files = sorted(glob.glob("configs/**/*.yaml", recursive=True))
    assert len(files) >= 12
    for path in files:
        build_config(path)
