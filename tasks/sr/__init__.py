"""Single-image super-resolution: bicubic LR/HR data, EDSR/SRResNet, PSNR/SSIM on Y.

Importing this package registers the `sr` task, its datasets and its models.
"""

from __future__ import annotations

from tasks.sr import data, models
from tasks.sr.task import SuperResolutionTask

__all__ = ["SuperResolutionTask", "data", "models"]
