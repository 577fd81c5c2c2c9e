"""U-Net (Ronneberger et al., MICCAI 2015) in the padded form DHP prunes for denoising.

Encoder: `depth` levels of two 3×3 conv + ReLU with `start_filts · 2^i` channels, 2×2 max-pool
between levels. Decoder: ConvTranspose2d(k=2, s=2) halving the channels, concat with the
encoder's skip as `torch.cat([up, skip], 1)`, two 3×3 conv + ReLU; a final 1×1 conv. Depth 5,
32 start filters: 7.76 M params and 3.01 G true conv MACs at 1×128×128 (the DHP table's 3.41 G
counts each transposed conv per output pixel).

Output: the DHP reference predicts the clean image directly (`residual=False`, the default);
`residual=True` returns input − net(input) like DnCNN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.registry import MODELS

__all__ = ["DownBlock", "UNet", "UpBlock", "unet"]


class DownBlock(nn.Module):
    """Two 3×3 conv + ReLU at one resolution."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act2(self.conv2(self.act1(self.conv1(x))))


class UpBlock(nn.Module):
    """ConvTranspose ×2 (c_in → c_out), concat with the skip (c_out), two 3×3 conv + ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.upconv = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.conv1 = nn.Conv2d(2 * c_out, c_out, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = torch.cat([self.upconv(x), skip], 1)  # concat couples conv1's input channels
        return self.act2(self.conv2(self.act1(self.conv1(x))))


class UNet(nn.Module):
    """U-Net: [N, C, H, W] → [N, C, H, W]; any size (padded inside to a multiple of 2^(depth−1))."""

    def __init__(
        self, *, in_chans: int = 1, depth: int = 5, start_filts: int = 32, residual: bool = False
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ConfigError(f"UNet depth must be ≥ 2, got {depth}")
        widths = [start_filts * 2**i for i in range(depth)]
        self.residual = residual
        self.size_multiple = 2 ** (depth - 1)
        self.down = nn.ModuleList(
            DownBlock(in_chans if i == 0 else widths[i - 1], w) for i, w in enumerate(widths)
        )
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(UpBlock(widths[i], widths[i - 1]) for i in range(depth - 1, 0, -1))
        self.final = nn.Conv2d(widths[0], in_chans, 1)

    def forward(self, x: Tensor) -> Tensor:
        # pad bottom/right to a multiple of 2^(depth-1) (BSD68 is 481×321), crop back at the end;
        # a zero pad at the measured 128×128 size, and traceable (no branch on the shape)
        height, width = x.shape[-2], x.shape[-1]
        m = self.size_multiple
        h = F.pad(x, (0, (m - width % m) % m, 0, (m - height % m) % m), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                h = self.pool(h)
            h = block(h)
            skips.append(h)
        skips.pop()  # the bottom level feeds the decoder directly
        for block in self.up:
            h = block(h, skips.pop())
        out = self.final(h)[..., :height, :width]
        return x - out if self.residual else out


@MODELS.register("unet", task="denoise")
def unet(*, in_chans: int = 1, **kw) -> nn.Module:
    """U-Net of depth 5 with 32 start filters (DHP's denoising U-Net)."""
    return UNet(in_chans=in_chans, **kw)
