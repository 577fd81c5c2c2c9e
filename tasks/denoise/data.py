"""Denoising data: clean images plus additive white Gaussian noise, gray or colour.

Noise is N(0, σ²) on the 0..255 scale (`data.sigma`, default 50), added on the fly to every
training patch and NOT clipped, as DnCNN and DHP do. Validation and test noise is drawn once,
on the CPU, per image from (`data.noise_seed`, image name) for test and (`data.noise_seed + 1`,
name) for validation, independent of the run seed, the device and the other images loaded, so
every method and seed is scored on the same noisy images and BSD68's noise is the same whether
or not Set12 is tested beside it.

Datasets (DATASETS, task="denoise"): `denoise_embedded` (scikit-image's bundled images, gray
by default) and `denoise_folders` (Train400 for training, BSD68 / Set12 for testing under
`data.root`; validation is `data.val` or held out of the training images).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from harness.errors import ConfigError, DataNotFoundError
from harness.registry import DATASETS
from harness.task import DataSplits
from tasks.restoration import (
    ImageBatches,
    PatchBatches,
    bundled_image,
    center_crop,
    epoch_batches,
    holdout_split,
    list_images,
    load_image,
)

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from torch import Tensor

__all__ = [
    "add_noise",
    "build_denoise_embedded",
    "build_denoise_folders",
    "fixed_noisy",
    "image_noise_seed",
    "load_denoise_folder",
]

log = logging.getLogger(__name__)

# (name, clean uint8 [C, H, W], benchmark set)
Clean = tuple[str, "Tensor", str]

_LAYOUT = (
    "expected <data.root>/<name>/*.png|bmp|jpg, e.g. Train400/ (training), BSD68/, Set12/ "
    "(testing), as in the DnCNN repository. Set data.root (or PRUNEBENCH_DATA_ROOT) to their "
    "parent."
)


def add_noise(clean: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """clean (0..1) + N(0, (σ/255)²), not clipped; the noise comes from `generator`'s device."""
    noise = torch.randn(
        clean.shape, generator=generator, device=generator.device, dtype=clean.dtype
    )
    return clean + noise.to(clean.device) * (sigma / 255.0)


def image_noise_seed(seed: int, name: str) -> int:
    """A 63-bit generator seed from (seed, image name): stable across runs and machines (not
    Python's salted `hash`), different for every image."""
    digest = hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def fixed_noisy(images: list[Clean], sigma: float, seed: int) -> list[tuple[Tensor, Tensor]]:
    """(noisy float [C, H, W], clean uint8) pairs; each image's noise comes from its own CPU
    generator seeded by (`seed`, its name), so it never depends on the other images loaded."""
    out = []
    for name, im, _ in images:
        g = torch.Generator().manual_seed(image_noise_seed(seed, name))
        out.append((add_noise(im.float() / 255.0, sigma, g), im))
    return out


def load_denoise_folder(root: Path, name: str, channels: int) -> list[Clean]:
    """All images of one named folder as clean uint8 tensors."""
    folder = root / name
    if not folder.is_dir():
        raise DataNotFoundError(f"denoising dataset '{name}' not found at {folder}; {_LAYOUT}")
    files = list_images(folder)
    if not files:
        raise DataNotFoundError(f"no images in {folder}; {_LAYOUT}")
    log.info("%s: %d images", name, len(files))
    return [(f.stem, load_image(f, channels), name) for f in files]


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _splits(
    train: list[Clean], val: list[Clean], test: list[Clean], cfg: DictConfig, seed: int
) -> DataSplits:
    if not train or not val or not test:
        raise ConfigError(
            f"denoising data needs train, val and test images; got {len(train)}, {len(val)}, "
            f"{len(test)}"
        )
    sigma = float(cfg.get("sigma", 50))
    if sigma < 0:
        raise ConfigError(f"data.sigma must be ≥ 0 (0..255 scale), got {sigma}")
    noise_seed = int(cfg.get("noise_seed", 0))
    batch_size, num_batches = epoch_batches(cfg)

    def noisy_patch(batch: tuple[Tensor, ...], g: torch.Generator) -> tuple[Tensor, ...]:
        (clean,) = batch
        return add_noise(clean, sigma, g), clean

    train_batches = PatchBatches(
        [im for _, im, _ in train],
        patch_size=int(cfg.patch_size),
        batch_size=batch_size,
        num_batches=num_batches,
        augment=bool(cfg.get("augment", True)),
        transform=noisy_patch,
        seed=seed,
    )
    val_crop = cfg.get("val_crop")
    val = [(n, center_crop(im, val_crop)[0], g) for n, im, g in val]
    return DataSplits(
        train=train_batches,
        val=ImageBatches(fixed_noisy(val, sigma, noise_seed + 1), [v[0] for v in val]),
        test=ImageBatches(
            fixed_noisy(test, sigma, noise_seed), [t[0] for t in test], [t[2] for t in test]
        ),
        info={
            "sigma": sigma,
            "channels": int(cfg.get("channels", 1)),
            "noise_seed": noise_seed,
            "train_images": len(train),
            "val_images": len(val),
            "test_sets": sorted({t[2] for t in test}),
        },
    )


@DATASETS.register("denoise_embedded", task="denoise", offline=True)
def build_denoise_embedded(cfg: DictConfig, *, seed: int) -> DataSplits:
    """Offline denoising data from scikit-image's bundled images (split named in the config)."""
    channels = int(cfg.get("channels", 1))

    def load(names: list[str], group: str) -> list[Clean]:
        return [(n, bundled_image(n, channels), group) for n in names]

    return _splits(
        load(_as_list(cfg.train_images), "train"),
        load(_as_list(cfg.val_images), "val"),
        load(_as_list(cfg.test_images), "skimage"),
        cfg,
        seed,
    )


@DATASETS.register("denoise_folders", task="denoise", offline=True)
def build_denoise_folders(cfg: DictConfig, *, seed: int) -> DataSplits:
    """Denoising folders under `data.root` (Train400 / BSD68 / Set12 layout)."""
    root = Path(str(cfg.root)).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"data.root {root} is not a folder; {_LAYOUT}")
    channels = int(cfg.get("channels", 1))
    train = [c for n in _as_list(cfg.train) for c in load_denoise_folder(root, n, channels)]
    val_names = _as_list(cfg.get("val"))
    if val_names:
        val = [c for n in val_names for c in load_denoise_folder(root, n, channels)]
    else:
        train, val = holdout_split(train, int(cfg.val_holdout), int(cfg.get("split_seed", 0)))
    test = [c for n in _as_list(cfg.test) for c in load_denoise_folder(root, n, channels)]
    return _splits(train, val, test, cfg, seed)
