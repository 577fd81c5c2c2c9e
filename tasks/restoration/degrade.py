"""Degradation of the SR protocol: crop HR to a multiple of the scale, bicubic downscale."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_to_multiple(img: Tensor, scale: int) -> Tensor:
    """Crop [..., H, W] at the top-left so H and W are multiples of `scale` (EDSR protocol)."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def bicubic_downscale(hr: Tensor, scale: int) -> Tensor:
    """uint8 [C, H, W] → uint8 [C, H/s, W/s] by antialiased bicubic (a = −0.5).

    torch's antialiased bicubic widens the kernel by `scale` like MATLAB's `imresize`; it agrees
    with Pillow's BICUBIC to ~0.1 grey levels on average and differs from MATLAB only near the
    borders. `hr` must already be cropped to a multiple of `scale`. The result is rounded to
    uint8, as the stored LR images of DIV2K are.
    """
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of scale {scale}; crop it first")
    x = hr.unsqueeze(0).float()  # [1, C, H, W] on 0..255
    lr = F.interpolate(
        x, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True
    )
    return lr.round().clamp(0, 255).to(torch.uint8)[0]
