"""Backbone networks: images (B, C, H, W) in, pooled features (B, F) out.

``small-cnn`` is the fast CPU default (four 3×3 conv layers). The ResNets and GoogLeNet come from torchvision; for
images of 64 px or less (unless ``--no-small-stem``) the ResNet stem becomes a 3×3 stride-1 conv without max-pool
(the usual CIFAR variant).
Stochastic depth (ResNets) drops each residual branch with a linearly growing rate, as Noisy Student's noise.
"""

from __future__ import annotations

import torch
from torch import nn

from weakdml.compat import import_torchvision


class SmallCNN(nn.Module):
    """Four Conv-BN-ReLU stages of 32, 64, 128 and 256 channels, each but the last followed by a 2×2 max-pool, then
    global average pooling: 256 features, 388 k parameters, about 10 M multiply-adds per 28 px image. (An earlier
    two-resolution design with 64 features was too small for Fashion-MNIST: docs/results.md, design decisions.)"""

    def __init__(self, in_channels: int, width: float = 1.0) -> None:
        """``width`` multiplies every stage's channels (2: 64–512 channels, 1.55 M parameters)."""
        super().__init__()
        channels = [max(1, round(c * width)) for c in (32, 64, 128, 256)]
        layers: list[nn.Module] = []
        for i, cout in enumerate(channels):
            cin = in_channels if i == 0 else channels[i - 1]
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2) if i < len(channels) - 1 else nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.out_features = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class AvgMaxPool(nn.Module):
    """Global average plus global max pooling of a feature map (B, F, H, W) -> (B, F, 1, 1), the IAA code's GAP +
    GMP; it replaces torchvision's ``avgpool``, so the state-dict keys stay torchvision's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True) + x.amax(dim=(2, 3), keepdim=True)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch per sample with probability ``p`` (scaling the kept
    ones by 1/(1-p)). It is a child of its residual block and acts as a forward hook on the branch's last BatchNorm,
    i.e. just before the residual addition, so the block's state-dict keys stay torchvision's (pretrained weights
    load). ``p = rate × depth_fraction``: the rate grows linearly with depth (Huang et al.)."""

    def __init__(self, depth_fraction: float, rate: float) -> None:
        super().__init__()
        self.depth_fraction = depth_fraction
        self.p = rate * depth_fraction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1 - self.p)

    def after(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook: drop the branch's output."""
        return self(output)


def _resnet(name: str, in_channels: int, small_stem: bool, stochastic_depth: float) -> tuple[nn.Module, int]:
    models = import_torchvision().models
    net = getattr(models, name)(weights=None)
    if small_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    blocks = [block for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for block in layer]
    for depth, block in enumerate(blocks):
        block.drop_path = DropPath((depth + 1) / len(blocks), stochastic_depth)
        last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
        last_bn.register_forward_hook(block.drop_path.after)
    features = net.fc.in_features
    net.fc = nn.Identity()
    return net, features


def _googlenet(in_channels: int) -> tuple[nn.Module, int]:
    models = import_torchvision().models
    net = models.googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=False)
    if in_channels != 3:
        net.conv1.conv = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    features = net.fc.in_features
    net.fc = nn.Identity()
    return net, features


def build_backbone(name: str, in_channels: int, image_size: int, stochastic_depth: float = 0.0,
                   small_stem: bool | None = None, width: float = 1.0, pooling: str = "avg") -> tuple[nn.Module, int]:
    """The named backbone and its feature size; ``small_stem`` None means: for images of 64 px or less; ``width``
    multiplies small-cnn's channels; ``pooling`` "avg+max" adds global max pooling (ResNets, GoogLeNet)."""
    if name == "small-cnn":
        net = SmallCNN(in_channels, width)
        return net, net.out_features
    if name in ("resnet18", "resnet50"):
        net, features = _resnet(name, in_channels, image_size <= 64 if small_stem is None else small_stem,
                                stochastic_depth)
    elif name == "googlenet":
        net, features = _googlenet(in_channels)
    else:
        raise ValueError(f"unknown backbone {name}")  # config validation lists the valid names first
    if pooling == "avg+max":
        net.avgpool = AvgMaxPool()
    return net, features
