"""PSNR/SSIM of the EDSR/DnCNN/DHP tables. Inputs on the 0..255 scale, [N, C, H, W]; one score
per image."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def quantize(x: Tensor) -> Tensor:
    """Model output on 0..1 → float on 0..255, rounded and clamped as a saved image would be."""
    return x.float().mul(255.0).clamp(0.0, 255.0).round()


def rgb_to_y(x: Tensor) -> Tensor:
    """RGB on 0..255 [N, 3, H, W] → ITU-R BT.601 luma Y on 16..235 [N, 1, H, W] (not rounded).

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, MATLAB's `rgb2ycbcr` and EDSR's
    `calc_psnr` (which writes the same weights as 65.738/256 …).
    """
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_y needs 3 channels, got {x.shape[1]}")
    w = x.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return 16.0 + (x * w).sum(dim=1, keepdim=True) / 255.0


def shave(x: Tensor, border: int) -> Tensor:
    """Drop `border` pixels on every side (SR tables shave `scale` pixels)."""
    return x[..., border:-border, border:-border] if border > 0 else x


def psnr(x: Tensor, y: Tensor, data_range: float = 255.0) -> Tensor:
    """Peak signal-to-noise ratio per image, dB: 10·log10(range² / MSE); inf when equal."""
    if x.shape != y.shape:  # never broadcast: a pruned net with the wrong scale must fail loudly
        raise ValueError(f"PSNR of an output {tuple(x.shape)} against a target {tuple(y.shape)}")
    with torch.autocast(x.device.type, enabled=False):
        mse = (x.float() - y.float()).pow(2).flatten(1).mean(dim=1)
        return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian(size: int, sigma: float, device: torch.device) -> Tensor:
    r = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: Tensor, y: Tensor, data_range: float = 255.0, *, win_size: int = 11, sigma: float = 1.5
) -> Tensor:
    """Structural similarity per image (Wang et al. 2004), averaged over channels.

    Gaussian window 11×11, σ = 1.5, K1 = 0.01, K2 = 0.03, population (co)variances, and only
    the 'valid' positions where the window fits, as in the authors' MATLAB `ssim_index` (and
    `skimage.metrics.structural_similarity(gaussian_weights=True, use_sample_covariance=False)`).
    Computed in float64: E[x²] − μ² on 0..255 values loses ~1e-4 of SSIM in float32.
    """
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}px, got {tuple(x.shape[-2:])}")
    with torch.autocast(x.device.type, enabled=False):
        x, y = x.double(), y.double()
        c = x.shape[1]
        g = _gaussian(win_size, sigma, x.device)
        kh = g.view(1, 1, 1, win_size).expand(c, 1, 1, win_size)
        kv = g.view(1, 1, win_size, 1).expand(c, 1, win_size, 1)

        def blur(t: Tensor) -> Tensor:  # separable Gaussian, 'valid' region only
            return F.conv2d(F.conv2d(t, kh, groups=c), kv, groups=c)

        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x * mu_x
        var_y = blur(y * y) - mu_y * mu_y
        cov = blur(x * y) - mu_x * mu_y
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
        den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
        return (num / den).flatten(1).mean(dim=1).float()


def mean_of(values: list[Tensor]) -> float:
    """Mean of per-image score tensors with a single host sync."""
    if not values:
        return math.nan
    return torch.cat([v.reshape(-1) for v in values]).mean().item()  # sync: once per metric
