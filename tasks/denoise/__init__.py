"""Gaussian denoising: on-the-fly noisy patches, DnCNN/U-Net, PSNR/SSIM on the clean image.

Importing this package registers the `denoise` task, its datasets and its models.
"""

from __future__ import annotations

from tasks.denoise import data, models
from tasks.denoise.task import DenoiseTask

__all__ = ["DenoiseTask", "data", "models"]
