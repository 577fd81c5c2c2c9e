"""CIFAR ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2).

Depth 6n+2 with basic blocks (ResNet-20/32/44/56/110): a 3×3 stem with 16 channels, three stages
of n blocks at widths 16/32/64 (the first block of stages 2 and 3 has stride 2), global average
pooling and one linear layer. ResNet-164 is the pre-activation paper's bottleneck depth
(He et al., ECCV 2016): 9n+2 with n = 18, inner widths 16/32/64, expansion 4.

Where a shortcut changes shape, `shortcut="projection"` uses a 1×1 conv (stride s) + BN, as DHP
does (ResNet-56: 125.75 M conv+linear MACs, 0.86 M params at 3×32×32); `"padding"` is the paper's
option A, a strided identity with zero channel padding (125.49 M, 0.85 M), which adds no
parameters but ties the channels of consecutive stages together.

Every conv, BN and linear layer is its own module and nothing is in-place, so torch.fx and
Torch-Pruning's DependencyGraph can trace the nets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.registry import MODELS

__all__ = ["BasicBlock", "Bottleneck", "CifarResNet", "PadShortcut"]

SHORTCUTS = ("projection", "padding")


def conv3x3(in_chans: int, out_chans: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False)


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by `stride`, then zero-pad channels equally on both sides."""

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        if out_chans < in_chans or (out_chans - in_chans) % 2:
            raise ValueError(f"padding shortcut cannot map {in_chans} to {out_chans} channels")
        self.stride = stride
        self.pad = (out_chans - in_chans) // 2

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))  # pads dim 1 (channels)


def make_shortcut(in_chans: int, out_chans: int, stride: int, kind: str) -> nn.Module:
    """Identity when the shape is kept; otherwise a projection or a padding shortcut."""
    if stride == 1 and in_chans == out_chans:
        return nn.Identity()
    if kind == "projection":
        return nn.Sequential(
            nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out_chans),
        )
    return PadShortcut(in_chans, out_chans, stride)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    expansion = 1

    def __init__(
        self, in_chans: int, planes: int, stride: int = 1, shortcut: str = "projection"
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_chans, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut = make_shortcut(in_chans, planes, stride, shortcut)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carries the stride), 1×1 expand ×4, each with BN; shortcut; ReLU."""

    expansion = 4

    def __init__(
        self, in_chans: int, planes: int, stride: int = 1, shortcut: str = "projection"
    ) -> None:
        super().__init__()
        out_chans = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chans, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_chans, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chans)
        self.relu = nn.ReLU()
        self.shortcut = make_shortcut(in_chans, out_chans, stride, shortcut)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem, three stages (stride 1, 2, 2), global average pooling, linear classifier."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        num_blocks: Sequence[int],
        *,
        in_chans: int = 3,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64),
        shortcut: str = "projection",
    ) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ConfigError(f"unknown shortcut '{shortcut}'; known: {', '.join(SHORTCUTS)}")
        self.conv1 = conv3x3(in_chans, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        chans = widths[0]
        stages = []
        for i, (planes, n) in enumerate(zip(widths, num_blocks, strict=True)):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(chans, planes, stride, shortcut))
                chans = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convs (fan_out, as torchvision), BN γ=1 β=0; the linear layer keeps
        PyTorch's default (Kaiming-uniform) init."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def _basic(depth: int, in_chans: int, num_classes: int, shortcut: str) -> CifarResNet:
    n = (depth - 2) // 6
    return CifarResNet(
        BasicBlock, [n] * 3, in_chans=in_chans, num_classes=num_classes, shortcut=shortcut
    )


@MODELS.register("resnet20", task="classification")
def resnet20(
    *, in_chans: int = 3, num_classes: int = 10, shortcut: str = "projection"
) -> CifarResNet:
    """ResNet-20: 3 basic blocks per stage (≈ 41 M MACs, 0.27 M params at 3×32×32)."""
    return _basic(20, in_chans, num_classes, shortcut)


@MODELS.register("resnet32", task="classification")
def resnet32(
    *, in_chans: int = 3, num_classes: int = 10, shortcut: str = "projection"
) -> CifarResNet:
    """ResNet-32: 5 basic blocks per stage."""
    return _basic(32, in_chans, num_classes, shortcut)


@MODELS.register("resnet44", task="classification")
def resnet44(
    *, in_chans: int = 3, num_classes: int = 10, shortcut: str = "projection"
) -> CifarResNet:
    """ResNet-44: 7 basic blocks per stage."""
    return _basic(44, in_chans, num_classes, shortcut)


@MODELS.register("resnet56", task="classification")
def resnet56(
    *, in_chans: int = 3, num_classes: int = 10, shortcut: str = "projection"
) -> CifarResNet:
    """ResNet-56: 9 basic blocks per stage (125.75 M MACs projection, 125.49 M padding)."""
    return _basic(56, in_chans, num_classes, shortcut)


@MODELS.register("resnet110", task="classification")
def resnet110(
    *, in_chans: int = 3, num_classes: int = 10, shortcut: str = "projection"
) -> CifarResNet:
    """ResNet-110 of He et al. 2016: 18 basic blocks per stage (DHP's "ResNet-110" is a
    bottleneck net instead; its numbers are not comparable with this one)."""
    return _basic(110, in_chans, num_classes, shortcut)


@MODELS.register("resnet164", task="classification")
def resnet164(
    *, in_chans: int = 3, num_classes: int = 10, shortcut: str = "projection"
) -> CifarResNet:
    """ResNet-164: 18 bottleneck blocks per stage, outputs 64/128/256 channels."""
    return CifarResNet(
        Bottleneck, [18] * 3, in_chans=in_chans, num_classes=num_classes, shortcut=shortcut
    )
