"""DnCNN (Zhang et al., TIP 2017): residual learning of the noise with a plain conv stack.

conv + ReLU → (depth − 2) × [conv (no bias) - BN - ReLU] → conv; the net predicts the noise and
the model returns input − noise. 17 convs × 64 channels: 9.08 G conv MACs, 0.56 M params at
1×128×128. The first conv keeps the baseline's ReLU (the DHP reference code dropped it).
"""

from __future__ import annotations

from torch import Tensor, nn

from harness.errors import ConfigError
from harness.registry import MODELS

__all__ = ["ConvBNReLU", "DnCNN", "dncnn"]


class ConvBNReLU(nn.Sequential):
    """3×3 conv without bias (BN follows), BatchNorm, ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
        )


class DnCNN(nn.Module):
    """DnCNN: noisy [N, C, H, W] → denoised [N, C, H, W]."""

    def __init__(self, *, in_chans: int = 1, depth: int = 17, n_feats: int = 64) -> None:
        super().__init__()
        if depth < 3:
            raise ConfigError(f"DnCNN depth counts convs and must be ≥ 3, got {depth}")
        self.head = nn.Conv2d(in_chans, n_feats, 3, padding=1)
        self.head_act = nn.ReLU()
        self.body = nn.Sequential(*[ConvBNReLU(n_feats, n_feats) for _ in range(depth - 2)])
        self.tail = nn.Conv2d(n_feats, in_chans, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        noise = self.tail(self.body(self.head_act(self.head(x))))
        return x - noise


@MODELS.register("dncnn", task="denoise")
def dncnn(*, in_chans: int = 1, **kw) -> nn.Module:
    """DnCNN-S: 17 convs × 64 channels, BN in the middle 15."""
    return DnCNN(in_chans=in_chans, **kw)
