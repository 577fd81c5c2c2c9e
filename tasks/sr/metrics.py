"""SR scores as the EDSR/DHP tables compute them.

The output is quantised to 0..255 (round, clamp), both images are converted to BT.601 luma Y
(16..235, not rounded), `scale` pixels are shaved on every side, then PSNR (peak 255) and SSIM
(Gaussian 11×11, σ 1.5) are taken per image. Gray images (1 channel) are scored as they are.

A gray file in an RGB set (Set14's `bridge`) is loaded as three equal channels. The MATLAB
tables score such an image on its gray values (0..255), not on Y (16..235, which compresses the
error by 219/255 and adds 1.32 dB); `gray=True` does that, by mapping Y back to 0..255.
"""

from __future__ import annotations

from torch import Tensor

from tasks.restoration import psnr, quantize, rgb_to_y, shave, ssim

__all__ = ["sr_scores"]


def sr_scores(
    output: Tensor, target: Tensor, scale: int, *, gray: bool = False
) -> dict[str, Tensor]:
    """Per-image PSNR and SSIM on Y with `scale` pixels shaved; inputs on 0..1, [N, C, H, W].

    `gray`: the target came from a gray file; score (Y − 16) · 255/219, its gray values.
    """
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} differ")
    sr, hr = quantize(output), quantize(target)
    if sr.shape[1] == 3:
        sr, hr = rgb_to_y(sr), rgb_to_y(hr)
        if gray:
            sr, hr = (sr - 16.0) * (255.0 / 219.0), (hr - 16.0) * (255.0 / 219.0)
    sr, hr = shave(sr, scale), shave(hr, scale)
    return {"psnr": psnr(sr, hr), "ssim": ssim(sr, hr)}
