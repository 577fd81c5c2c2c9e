"""Shared machinery of the restoration tasks (super-resolution and denoising).

Image IO (folders, scikit-image's bundled images), MATLAB's bicubic `imresize` and the
degradation built on it, the PSNR/SSIM metrics of the EDSR/DnCNN/DHP tables, and two
iterables the training loop can use in place of `TensorBatches`: `PatchBatches` (random
patches drawn on the device from whole images held as uint8) and `ImageBatches` (whole images
of varying sizes, batch 1, for validation and test).
"""

from __future__ import annotations

from tasks.restoration.batches import ImageBatches, PatchBatches, dihedral, epoch_batches
from tasks.restoration.degrade import bicubic_downscale, bicubic_upscale, crop_to_multiple
from tasks.restoration.helpers import average_scores, build_registered_model, pixel_loss
from tasks.restoration.images import (
    BUNDLED_IMAGES,
    IMAGE_EXTS,
    bundled_image,
    center_crop,
    holdout_split,
    is_gray_file,
    list_images,
    load_image,
)
from tasks.restoration.imresize import imresize
from tasks.restoration.metrics import mean_of, psnr, quantize, rgb_to_y, shave, ssim

__all__ = [
    "BUNDLED_IMAGES",
    "IMAGE_EXTS",
    "ImageBatches",
    "PatchBatches",
    "average_scores",
    "bicubic_downscale",
    "bicubic_upscale",
    "build_registered_model",
    "bundled_image",
    "center_crop",
    "crop_to_multiple",
    "dihedral",
    "epoch_batches",
    "holdout_split",
    "imresize",
    "is_gray_file",
    "list_images",
    "load_image",
    "mean_of",
    "pixel_loss",
    "psnr",
    "quantize",
    "rgb_to_y",
    "shave",
    "ssim",
]
