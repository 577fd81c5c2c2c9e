"""SRResNet (Ledig et al., CVPR 2017), the generator of SRGAN trained with a pixel loss.

head conv 9×9 + PReLU → n_blocks × [conv-BN-PReLU-conv-BN + skip] → conv-BN + long skip →
×2 stages of (conv to 4·C, PixelShuffle(2), PReLU) → tail conv. The DHP tables use a 3×3 tail
(32.72 G conv MACs, 1.54 M params at a 128×128 LR input, ×4); SRGAN's original is 9×9
(`tail_kernel=9`). Every PReLU is per channel (num_parameters = C) so pruning can slice it.
No MeanShift, as in the reference.
"""

from __future__ import annotations

from torch import Tensor, nn

from harness.registry import MODELS
from tasks.sr.models.edsr import build_upsampler

__all__ = ["SRResBlock", "SRResNet", "srresnet"]


class SRResBlock(nn.Module):
    """conv-BN-PReLU-conv-BN plus the identity."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(n_feats)
        self.act = nn.PReLU(n_feats)
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(n_feats)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class SRResNet(nn.Module):
    """SRResNet: LR [N, C, h, w] → SR [N, C, h·s, w·s]."""

    def __init__(
        self,
        *,
        in_chans: int = 3,
        scale: int = 4,
        n_blocks: int = 16,
        n_feats: int = 64,
        head_kernel: int = 9,
        tail_kernel: int = 3,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(in_chans, n_feats, head_kernel, padding=head_kernel // 2)
        self.head_act = nn.PReLU(n_feats)
        self.blocks = nn.Sequential(*[SRResBlock(n_feats) for _ in range(n_blocks)])
        self.body_conv = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.body_bn = nn.BatchNorm2d(n_feats)
        self.upsampler = build_upsampler(n_feats, scale, act=nn.PReLU)
        self.tail = nn.Conv2d(n_feats, in_chans, tail_kernel, padding=tail_kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head_act(self.head(x))
        x = x + self.body_bn(self.body_conv(self.blocks(x)))  # long skip
        return self.tail(self.upsampler(x))


@MODELS.register("srresnet", task="sr")
def srresnet(*, in_chans: int = 3, scale: int = 4, **kw) -> nn.Module:
    """SRResNet: 16 blocks × 64 features, 3×3 tail (as in the DHP tables)."""
    return SRResNet(in_chans=in_chans, scale=scale, **kw)
