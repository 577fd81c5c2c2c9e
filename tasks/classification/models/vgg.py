"""VGG-16 with BatchNorm, CIFAR variant (Simonyan & Zisserman, ICLR 2015), as in network slimming.

Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017:
13 conv3x3-BN-ReLU layers (64,64,M,128,128,M,256,256,256,M,512,512,512,M,512,512,512), global
average pooling and a single Linear(512, num_classes); conv weights N(0, 2/(k²·out)), BN γ = 0.5,
linear N(0, 0.01), as in their reference code.

The number of max-pools is fixed at construction from `input_size`, not from the data, so the graph
stays static: at most 4, and never so many that the last conv sees less than 2×2 (32×32 input →
4 pools → 2×2, like the paper; 8×8 digits → 2 pools).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from harness.registry import MODELS

__all__ = ["VGG", "VGG16_CFG", "num_pools"]

VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip


def num_pools(input_size: int, max_pools: int) -> int:
    """Max-pools that keep at least 2×2 maps for the last conv block."""
    return max(0, min(max_pools, int(math.log2(max(1, input_size))) - 1))


class VGG(nn.Module):
    """Plain conv stack from a cfg list ("M" = 2×2 max-pool), global average pool, linear."""

    def __init__(
        self,
        cfg: Sequence[int | str] = VGG16_CFG,
        *,
        in_chans: int = 3,
        num_classes: int = 10,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        keep = num_pools(input_size, sum(v == "M" for v in cfg))
        layers: list[nn.Module] = []
        chans = in_chans
        for v in cfg:
            if v == "M":
                if keep > 0:  # the later pools are dropped for small inputs
                    layers.append(nn.MaxPool2d(2))
                    keep -= 1
                continue
            layers += [
                nn.Conv2d(chans, int(v), 3, padding=1, bias=False),
                nn.BatchNorm2d(int(v)),
                nn.ReLU(),
            ]
            chans = int(v)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(chans, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.5)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@MODELS.register("vgg16", task="classification")
def vgg16(*, in_chans: int = 3, num_classes: int = 10, input_size: int = 32) -> VGG:
    """VGG-16-BN for CIFAR (≈ 313 M MACs, 14.7 M params at 3×32×32, 10 classes)."""
    return VGG(VGG16_CFG, in_chans=in_chans, num_classes=num_classes, input_size=input_size)
