"""MATLAB's bicubic `imresize`, written from its published definition, so LR images and the
bicubic row are those of the SR tables (which MATLAB made) pixel for pixel, borders included.

The definition (Image Processing Toolbox `imresize.m`, 'bicubic', 'Antialiasing' on):

- kernel: Keys' cubic with a = −0.5, support [−2, 2];
- output pixel x (1-based) samples the input at u = x / s + (1 − 1/s) / 2;
- downsizing (s < 1) stretches the kernel to h(t) = s · cubic(s · t) of width 4 / s (antialias);
- the taps are left = floor(u − width/2) + 0 … ceil(width) + 1, weights h(u − tap) normalised
  to sum to 1 per output pixel;
- taps outside 1..n are mirrored with the edge pixel repeated: index i maps to
  aux[(i − 1) mod 2n] with aux = [1 … n, n … 1] (numpy's `symmetric` padding);
- the dimension with the smaller scale is resized first, rows first on a tie;
- each pass returns the input's class: a uint8 image is rounded (half away from zero) and
  saturated to 0..255 after every pass, not only at the end.

Each pass is one matrix product with a dense [out, in] weight matrix (taps that mirror onto the
same pixel add up), so whole benchmark sets resize in milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["cubic", "imresize", "resize_weights"]


def cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = −0.5 (MATLAB's `cubic`)."""
    a = np.abs(t)
    a2, a3 = a * a, a * a * a
    inner = (1.5 * a3 - 2.5 * a2 + 1.0) * (a <= 1)
    outer = (-0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0) * ((a > 1) & (a <= 2))
    return inner + outer


def resize_weights(n_in: int, n_out: int, scale: float, antialias: bool = True) -> np.ndarray:
    """The [n_out, n_in] float64 matrix of one bicubic pass along a dimension of length n_in."""
    width = 4.0
    if scale < 1 and antialias:
        width = width / scale

        def kernel(t: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * t)
    else:
        kernel = cubic
    x = np.arange(1, n_out + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = left[:, None] + np.arange(math.ceil(width) + 2, dtype=np.float64)[None, :]
    w = kernel(u[:, None] - taps)
    w = w / w.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])  # 0-based [0..n-1, n-1..0]
    idx = aux[np.mod(taps.astype(np.int64) - 1, 2 * n_in)]
    m = np.zeros((n_out, n_in), dtype=np.float64)
    np.add.at(m, (np.repeat(np.arange(n_out), idx.shape[1]), idx.reshape(-1)), w.reshape(-1))
    return m


def _round_uint8(x: Tensor) -> Tensor:
    """MATLAB's conversion to uint8: round half away from zero, saturate to 0..255."""
    return torch.floor(x.clamp(0.0, 255.0) + 0.5)


def imresize(
    img: Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    *,
    antialias: bool = True,
) -> Tensor:
    """Bicubic resize of [..., H, W] as MATLAB's `imresize(img, scale)` or `imresize(img, size)`.

    With `scale` the output is MATLAB's ceil(scale · (H, W)); with `size` each dimension's scale
    is size / input, as MATLAB derives it. The dimension with the smaller scale is resized first
    (rows on a tie). A uint8 image comes back uint8, rounded after each pass as MATLAB does; a
    floating image comes back float64, unrounded. Computed in float64 on `img`'s device.
    """
    h, w = img.shape[-2:]
    if size is not None:
        if min(size) < 1:
            raise ValueError(f"imresize needs a positive output size, got {tuple(size)}")
        sizes = (int(size[0]), int(size[1]))
        scales = (sizes[0] / h, sizes[1] / w)
    elif scale is not None and scale > 0:
        sizes = (math.ceil(scale * h), math.ceil(scale * w))
        scales = (float(scale), float(scale))
    else:
        raise ValueError(f"imresize needs a positive scale or an output size, got scale={scale}")
    is_uint8 = img.dtype == torch.uint8
    x = img.to(torch.float64)
    for dim in sorted((0, 1), key=lambda d: scales[d]):  # stable: rows first on a tie
        n_in = (h, w)[dim]
        m = resize_weights(n_in, sizes[dim], scales[dim], antialias)
        m = torch.from_numpy(m).to(x.device)
        x = torch.matmul(m, x) if dim == 0 else torch.matmul(x, m.T)
        if is_uint8:
            x = _round_uint8(x)
    return x.to(torch.uint8) if is_uint8 else x
