"""PSNR / SSIM / Y-channel conventions of the SR and denoising tables, on hand-made images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tasks.denoise.task import denoise_scores
from tasks.restoration import psnr, quantize, rgb_to_y, shave, ssim
from tasks.sr.metrics import sr_scores


def _smooth_image(seed: int, c: int = 1, h: int = 48, w: int = 40) -> torch.Tensor:
    """A natural-ish image on 0..255: blurred noise, so SSIM is neither 0 nor 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, c, h // 4, w // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return (x * 255).round()


def test_psnr_of_a_constant_offset_is_known() -> None:
    x = torch.full((2, 1, 16, 16), 100.0)
    # MSE = 5² = 25 → PSNR = 10·log10(255² / 25)
    assert psnr(x + 5, x).tolist() == pytest.approx([10 * math.log10(255**2 / 25)] * 2)


def test_psnr_refuses_to_broadcast_a_wrong_output_size() -> None:
    # a ×2 output scored against a ×4 target (or a 1-row image) must not silently broadcast
    with pytest.raises(
        ValueError, match=r"output \(1, 1, 16, 16\) against a target \(1, 1, 32, 32\)"
    ):
        psnr(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="PSNR of an output"):
        psnr(torch.zeros(1, 1, 1, 16), torch.zeros(1, 1, 16, 16))


def test_psnr_is_per_image() -> None:
    x = torch.zeros(2, 1, 8, 8)
    y = torch.stack([torch.full((1, 8, 8), 1.0), torch.full((1, 8, 8), 10.0)])
    assert psnr(x, y).tolist() == pytest.approx([10 * math.log10(255**2), 10 * math.log10(650.25)])


def test_ssim_of_identical_images_is_one_and_of_offset_is_known() -> None:
    x = _smooth_image(0)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    # a constant offset d leaves the variances, lowers only the luminance term:
    # (2μ(μ+d) + C1) / (μ² + (μ+d)² + C1) per window
    c = torch.full((1, 1, 20, 20), 50.0)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 50 * 60 + c1) / (50**2 + 60**2 + c1)
    assert ssim(c + 10, c).item() == pytest.approx(expected, rel=1e-5)


def test_psnr_and_ssim_agree_with_skimage() -> None:
    x, y = _smooth_image(1), _smooth_image(2)
    y = (0.7 * x + 0.3 * y).round()
    ours_psnr, ours_ssim = psnr(x, y).item(), ssim(x, y).item()
    a, b = x[0, 0].numpy(), y[0, 0].numpy()
    ref_psnr = peak_signal_noise_ratio(a, b, data_range=255)
    ref_ssim = structural_similarity(
        a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ours_psnr == pytest.approx(ref_psnr, abs=1e-4)
    assert ours_ssim == pytest.approx(ref_ssim, abs=1e-4)


def test_ssim_of_rgb_is_the_channel_mean() -> None:
    x, y = _smooth_image(3, c=3), _smooth_image(4, c=3)
    per_channel = [ssim(x[:, k : k + 1], y[:, k : k + 1]).item() for k in range(3)]
    assert ssim(x, y).item() == pytest.approx(float(np.mean(per_channel)), abs=1e-6)


def test_ssim_refuses_images_smaller_than_the_window() -> None:
    with pytest.raises(ValueError, match="at least 11px"):
        ssim(torch.zeros(1, 1, 10, 30), torch.zeros(1, 1, 10, 30))


@pytest.mark.parametrize(
    ("rgb", "y"),
    [
        ((0, 0, 0), 16.0),
        ((255, 255, 255), 235.0),
        ((255, 0, 0), 16 + 65.481),
        ((0, 255, 0), 16 + 128.553),
        ((0, 0, 255), 16 + 24.966),
    ],
)
def test_rgb_to_y_matches_bt601_on_known_colours(rgb: tuple[int, int, int], y: float) -> None:
    img = torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = rgb_to_y(img)
    assert out.shape == (1, 1, 2, 2)
    assert out.flatten().tolist() == pytest.approx([y] * 4, abs=1e-3)


def test_shave_drops_the_border_on_every_side() -> None:
    x = torch.arange(100.0).view(1, 1, 10, 10)
    assert shave(x, 2).shape == (1, 1, 6, 6)
    assert shave(x, 2)[0, 0, 0, 0].item() == 22.0
    assert shave(x, 0) is x


def test_quantize_rounds_and_clamps_to_0_255() -> None:
    x = torch.tensor([-0.2, 0.0, 0.5 / 255, 1.4 / 255, 0.5, 1.0, 1.3])
    assert quantize(x).tolist() == [0.0, 0.0, 0.0, 1.0, 128.0, 255.0, 255.0]


def test_sr_scores_shave_scale_pixels_and_score_on_y() -> None:
    scale = 4
    hr = _smooth_image(5, c=3, h=48, w=48) / 255
    out = hr.clone()
    out[..., :scale, :] = 0.0  # damage only the shaved border rows
    scores = sr_scores(out, hr, scale)
    assert math.isinf(scores["psnr"].item())
    assert scores["ssim"].item() == pytest.approx(1.0, abs=1e-6)
    # a uniform +1/255 error on RGB is a Y error of (65.481 + 128.553 + 24.966) / 255 ≈ 0.859
    y_err = (65.481 + 128.553 + 24.966) / 255
    scores = sr_scores(hr.clamp(max=254 / 255) + 1 / 255, hr.clamp(max=254 / 255), scale)
    assert scores["psnr"].item() == pytest.approx(10 * math.log10(255**2 / y_err**2), abs=1e-3)


def test_sr_scores_quantise_the_output() -> None:
    hr = _smooth_image(6, c=3) / 255
    assert math.isinf(sr_scores(hr + 0.4 / 255, hr, 2)["psnr"].item())


def test_denoise_scores_use_the_whole_gray_image() -> None:
    clean = torch.full((1, 1, 16, 16), 100 / 255)
    out = clean.clone()
    out[..., 0, 0] = 110 / 255  # a border pixel counts (no shave): MSE = 100 / 256
    assert denoise_scores(out, clean)["psnr"].item() == pytest.approx(
        10 * math.log10(255**2 / (100 / 256)), abs=1e-4
    )
