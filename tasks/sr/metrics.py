"""SR scores as the EDSR/DHP tables compute them.

The output is quantised to 0..255 (round, clamp), both images are converted to BT.601 luma Y
(16..235, not rounded), `scale` pixels are shaved on every side, then PSNR (peak 255) and SSIM
(Gaussian 11×11, σ 1.5) are taken per image. Gray images (1 channel) are scored as they are.
"""

from __future__ import annotations

from torch import Tensor

from tasks.restoration import psnr, quantize, rgb_to_y, shave, ssim

__all__ = ["sr_scores"]


def sr_scores(output: Tensor, target: Tensor, scale: int) -> dict[str, Tensor]:
    """Per-image PSNR and SSIM on Y with `scale` pixels shaved; inputs on 0..1, [N, C, H, W]."""
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} differ")
    sr, hr = quantize(output), quantize(target)
    if sr.shape[1] == 3:
        sr, hr = rgb_to_y(sr), rgb_to_y(hr)
    sr, hr = shave(sr, scale), shave(hr, scale)
    return {"psnr": psnr(sr, hr), "ssim": ssim(sr, hr)}
