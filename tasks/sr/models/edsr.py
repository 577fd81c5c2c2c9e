"""EDSR (Lim et al., CVPRW 2017): a BN-free residual trunk with a long skip and a sub-pixel tail.

head conv → body (n_blocks × [conv-ReLU-conv, ×res_scale, + skip], then a conv) + long skip →
upsampler (conv to r²·C + PixelShuffle(r): twice for ×4, once for ×2/×3) → tail conv.
`edsr` is EDSR-baseline (16 × 64); `edsr_paper` is the variant in the DHP tables (8 × 128:
90.34 G conv MACs, 3.70 M params at a 128×128 LR input, ×4).

MeanShift: the DIV2K RGB mean is subtracted at the input and added back at the output as a
fixed, non-persistent buffer (no parameters, no MACs), as in the reference code; for inputs
that are not RGB it is off. `mean_shift=False` drops it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.registry import MODELS

__all__ = ["EDSR", "MeanShift", "ResBlock", "build_upsampler", "edsr", "edsr_paper"]

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def conv3x3(c_in: int, c_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)


def build_upsampler(
    n_feats: int, scale: int, act: type[nn.Module] | None = None, bias: bool = True
) -> nn.Sequential:
    """conv to r²·C + PixelShuffle(r) (+ optional per-channel act) per ×r stage.

    ×2^k uses k stages of ×2, ×3 one stage. The conv's output channels are coupled to the
    trunk in blocks of r² (PixelShuffle), which is what structural pruning must respect.
    """
    if scale < 2 or (scale & (scale - 1) and scale != 3):
        raise ConfigError(f"scale must be 3 or a power of 2 (≥ 2), got {scale}")
    factors = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
    layers: list[nn.Module] = []
    for r in factors:
        layers += [nn.Conv2d(n_feats, r * r * n_feats, 3, padding=1, bias=bias), nn.PixelShuffle(r)]
        if act is not None:
            layers.append(act(n_feats) if act is nn.PReLU else act())
    return nn.Sequential(*layers)


class MeanShift(nn.Module):
    """x + sign · mean with a fixed RGB mean (a buffer, not a parameter)."""

    def __init__(self, mean: tuple[float, ...], sign: float) -> None:
        super().__init__()
        shift = sign * torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.shift


class ResBlock(nn.Module):
    """conv-ReLU-conv, scaled by res_scale, plus the identity; no BatchNorm (EDSR's point)."""

    def __init__(self, n_feats: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = conv3x3(n_feats, n_feats)
        self.act = nn.ReLU()
        self.conv2 = conv3x3(n_feats, n_feats)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        res = self.conv2(self.act(self.conv1(x)))
        if self.res_scale != 1.0:
            res = res * self.res_scale
        return x + res


class EDSR(nn.Module):
    """EDSR: LR [N, C, h, w] → SR [N, C, h·s, w·s]."""

    def __init__(
        self,
        *,
        in_chans: int = 3,
        scale: int = 4,
        n_blocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        mean_shift: bool = True,
    ) -> None:
        super().__init__()
        self.scale = scale
        use_shift = mean_shift and in_chans == 3
        self.sub_mean = MeanShift(DIV2K_RGB_MEAN, -1.0) if use_shift else nn.Identity()
        self.head = conv3x3(in_chans, n_feats)
        blocks: list[nn.Module] = [ResBlock(n_feats, res_scale) for _ in range(n_blocks)]
        self.body = nn.Sequential(*blocks, conv3x3(n_feats, n_feats))
        self.upsampler = build_upsampler(n_feats, scale)
        self.tail = conv3x3(n_feats, in_chans)
        self.add_mean = MeanShift(DIV2K_RGB_MEAN, 1.0) if use_shift else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)  # long skip over the whole trunk
        return self.add_mean(self.tail(self.upsampler(x)))


@MODELS.register("edsr", task="sr")
def edsr(*, in_chans: int = 3, scale: int = 4, **kw) -> nn.Module:
    """EDSR-baseline: 16 residual blocks × 64 features, res_scale 1."""
    kw = {"n_blocks": 16, "n_feats": 64, **kw}
    return EDSR(in_chans=in_chans, scale=scale, **kw)


@MODELS.register("edsr_paper", task="sr")
def edsr_paper(*, in_chans: int = 3, scale: int = 4, **kw) -> nn.Module:
    """The EDSR of the DHP tables: 8 residual blocks × 128 features, res_scale 1."""
    kw = {"n_blocks": 8, "n_feats": 128, **kw}
    return EDSR(in_chans=in_chans, scale=scale, **kw)
