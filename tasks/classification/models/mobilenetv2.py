"""MobileNetV2, CIFAR variant (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018).

The paper's (t, c, n, s) table at width 1.0 with a 1280-channel last conv and no dropout. For
32×32 inputs the stem conv has stride 1 and the first two stride-2 stages (24 and 32 channels) run
at stride 1, so the last feature map is 8×8 (`stage_strides` overrides the seven stage strides;
kuangliu's widely used port is (1, 1, 2, 2, 1, 2, 1)). Each block expands with a 1×1 conv (skipped
when t = 1), filters with a depthwise 3×3 and projects linearly with a 1×1 conv; it adds its
input when the stride is 1 and the width is unchanged. ReLU6 everywhere, none after the projection.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from harness.errors import ConfigError
from harness.registry import MODELS

__all__ = ["CIFAR_STRIDES", "InvertedResidual", "MobileNetV2"]

# (expansion t, output channels c, blocks n); the strides are separate so the variant is one list
SETTINGS: tuple[tuple[int, int, int], ...] = (
    (1, 16, 1),
    (6, 24, 2),
    (6, 32, 3),
    (6, 64, 4),
    (6, 96, 3),
    (6, 160, 3),
    (6, 320, 1),
)
IMAGENET_STRIDES = (1, 2, 2, 2, 1, 2, 1)
CIFAR_STRIDES = (1, 1, 1, 2, 1, 2, 1)


def conv_bn_relu(in_chans: int, out_chans: int, kernel: int, stride: int = 1, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """Expand 1×1 → depthwise 3×3 (stride) → linear 1×1 projection; + input if shapes match."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_chans * expansion
        self.use_residual = stride == 1 and in_chans == out_chans  # fixed at build: static graph
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn_relu(in_chans, hidden, 1))
        layers += [
            conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_chans, 1, bias=False),
            nn.BatchNorm2d(out_chans),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """Stem conv 32, 17 inverted residual blocks, 1×1 conv 1280, global pool, linear."""

    def __init__(
        self,
        *,
        in_chans: int = 3,
        num_classes: int = 10,
        stage_strides: Sequence[int] = CIFAR_STRIDES,
        stem_stride: int = 1,
        last_chans: int = 1280,
    ) -> None:
        super().__init__()
        if len(stage_strides) != len(SETTINGS) or any(s not in (1, 2) for s in stage_strides):
            raise ConfigError(
                f"stage_strides must be {len(SETTINGS)} values of 1 or 2, got {list(stage_strides)}"
            )
        layers: list[nn.Module] = [conv_bn_relu(in_chans, 32, 3, stem_stride)]
        chans = 32
        for (t, c, n), s in zip(SETTINGS, stage_strides, strict=True):
            for i in range(n):
                layers.append(InvertedResidual(chans, c, s if i == 0 else 1, t))
                chans = c
        layers.append(conv_bn_relu(chans, last_chans, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last_chans, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's init: Kaiming-normal (fan_out) convs, BN 1/0, linear N(0, 0.01)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@MODELS.register("mobilenetv2", task="classification")
def mobilenetv2(
    *,
    in_chans: int = 3,
    num_classes: int = 10,
    stage_strides: Sequence[int] = CIFAR_STRIDES,
) -> MobileNetV2:
    """MobileNetV2 (width 1.0) for 32×32 inputs: stride-1 stem, overall stride 4."""
    return MobileNetV2(
        in_chans=in_chans, num_classes=num_classes, stage_strides=tuple(stage_strides)
    )
