"""Denoising models; importing this package registers them."""

from __future__ import annotations

from tasks.denoise.models.dncnn import DnCNN, dncnn
from tasks.denoise.models.unet import UNet, unet

__all__ = ["DnCNN", "UNet", "dncnn", "unet"]
