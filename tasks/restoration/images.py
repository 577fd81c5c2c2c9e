"""Restoration image IO: folders of image files and scikit-image's bundled images, read as uint8
[C, H, W]; the seeded validation hold-out and the centre crop every split uses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from harness.errors import ConfigError, DataNotFoundError

IMAGE_EXTS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")

# scikit-image images that ship inside the wheel (skimage/data/*.png|jpg), never the pooch
# downloads; name -> (function name, True when the image is gray).
BUNDLED_IMAGES: dict[str, tuple[str, bool]] = {
    "astronaut": ("astronaut", False),
    "chelsea": ("chelsea", False),
    "coffee": ("coffee", False),
    "hubble_deep_field": ("hubble_deep_field", False),
    "immunohistochemistry": ("immunohistochemistry", False),
    "retina": ("retina", False),
    "rocket": ("rocket", False),
    "stereo_motorcycle": ("stereo_motorcycle", False),  # the left view
    "brick": ("brick", True),
    "camera": ("camera", True),
    "cell": ("cell", True),
    "coins": ("coins", True),
    "grass": ("grass", True),
    "gravel": ("gravel", True),
    "moon": ("moon", True),
    "page": ("page", True),
    "text": ("text", True),
}


def _to_tensor(img: Image.Image, channels: int) -> Tensor:
    """PIL image → uint8 [C, H, W]; gray↔RGB by Pillow's `convert` (ITU-R 601 luma for 'L')."""
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (gray) or 3 (RGB), got {channels}")
    arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if channels == 1 else t.permute(2, 0, 1).contiguous()


def load_image(path: str | Path, channels: int) -> Tensor:
    """Read one image file as uint8 [C, H, W]."""
    try:
        with Image.open(path) as img:
            return _to_tensor(img, channels)
    except OSError as e:
        raise DataNotFoundError(f"cannot read image {path}: {e}") from e


def is_gray_file(path: str | Path) -> bool:
    """Whether an image file stores one gray channel (read from its header, not its pixels)."""
    try:
        with Image.open(path) as img:
            return img.mode in ("1", "L", "LA", "I", "I;16", "F")
    except OSError as e:
        raise DataNotFoundError(f"cannot read image {path}: {e}") from e


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def bundled_image(name: str, channels: int) -> Tensor:
    """One of scikit-image's bundled images as uint8 [C, H, W] (no download ever happens)."""
    if name not in BUNDLED_IMAGES:
        raise ConfigError(
            f"unknown bundled image '{name}'; known: {', '.join(sorted(BUNDLED_IMAGES))}"
        )
    import skimage.data

    fn_name, is_gray = BUNDLED_IMAGES[name]
    if channels == 3 and is_gray:
        raise ConfigError(
            f"bundled image '{name}' is gray; it cannot serve an RGB (channels=3) set"
        )
    arr = getattr(skimage.data, fn_name)()
    if isinstance(arr, tuple):  # stereo_motorcycle -> (left, right, disparity)
        arr = arr[0]
    return _to_tensor(Image.fromarray(np.ascontiguousarray(arr)), channels)


def holdout_split(items: Sequence, n_val: int, seed: int) -> tuple[list, list]:
    """Split `items` into (train, val) with `n_val` held out by a seeded permutation.

    The permutation depends only on `seed` (a data setting, not the run seed), so every run
    and every method is selected on the same validation images.
    """
    if not 0 <= n_val < len(items):
        raise ConfigError(
            f"cannot hold out {n_val} validation images from {len(items)} training images"
        )
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    val_idx = set(order[:n_val])
    train = [x for i, x in enumerate(items) if i not in val_idx]
    val = [x for i, x in enumerate(items) if i in val_idx]
    return train, val


def center_crop(img: Tensor, size: int | None) -> tuple[Tensor, int, int]:
    """Central crop of [..., H, W] to at most `size`×`size` (None: unchanged).

    Returns the crop and its top-left corner, so a paired HR image can be cut at ×scale.
    """
    if size is None:
        return img, 0, 0
    h, w = img.shape[-2:]
    ch, cw = min(h, size), min(w, size)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[..., top : top + ch, left : left + cw], top, left
