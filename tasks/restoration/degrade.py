"""Degradation of the SR protocol: crop HR to a multiple of the scale, MATLAB-bicubic downscale."""

from __future__ import annotations

from torch import Tensor

from tasks.restoration.imresize import imresize


def crop_to_multiple(img: Tensor, scale: int) -> Tensor:
    """Crop [..., H, W] at the top-left so H and W are multiples of `scale` (EDSR protocol)."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def bicubic_downscale(hr: Tensor, scale: int) -> Tensor:
    """uint8 [C, H, W] → uint8 [C, H/s, W/s] as MATLAB's `imresize(hr, 1/s, 'bicubic')`.

    The LR images of the SR tables (and DIV2K's stored LR) were made by MATLAB, so this is its
    antialiased a = −0.5 bicubic with its mirrored borders and its uint8 rounding (see
    `tasks.restoration.imresize`). `hr` must already be cropped to a multiple of `scale`.
    """
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of scale {scale}; crop it first")
    return imresize(hr, size=(h // scale, w // scale))


def bicubic_upscale(lr: Tensor, scale: int) -> Tensor:
    """uint8 [..., h, w] → uint8 [..., h·s, w·s] as MATLAB's `imresize(lr, s, 'bicubic')`: the
    bicubic (no-op) row of the SR tables."""
    h, w = lr.shape[-2:]
    return imresize(lr, size=(h * scale, w * scale))
