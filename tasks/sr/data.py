"""Super-resolution data: paired LR/HR images with bicubic degradation.

Two datasets (registered in DATASETS with task="sr"):

- `sr_embedded`: offline, from scikit-image's bundled RGB images, split into train / val /
  test by name in the config;
- `sr_folders`: benchmark folders under `data.root`: DIV2K (`DIV2K_train_HR/`, with
  `DIV2K_train_LR_bicubic/X{s}/` used when present), the EDSR benchmark layout (`HR/` +
  `LR_bicubic/X{s}/`), or plain HR-only folders (T91, Set5, Set14, B100).

HR images are cropped at the top-left to a multiple of the scale; missing LR images are made
once at load time with `bicubic_downscale` (MATLAB's `imresize`, exact) and kept as uint8.
Training draws random LR patches of `data.patch_size` pixels with flips/rot90 from the whole
images on the device; an epoch is `data.patches_per_epoch` patches. Validation and test are
whole images, batch 1 (validation optionally centre-cropped to `data.val_crop` LR pixels).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import ConfigError, DataNotFoundError
from harness.registry import DATASETS
from harness.task import DataSplits
from tasks.restoration import (
    ImageBatches,
    PatchBatches,
    bicubic_downscale,
    bundled_image,
    center_crop,
    crop_to_multiple,
    epoch_batches,
    holdout_split,
    is_gray_file,
    list_images,
    load_image,
)

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from torch import Tensor

__all__ = ["build_sr_embedded", "build_sr_folders", "make_pair", "resolve_sr_folder"]

log = logging.getLogger(__name__)

# (name, LR uint8 [C, h, w], HR uint8 [C, h·s, w·s], benchmark set, HR file was gray)
Pair = tuple[str, "Tensor", "Tensor", str, bool]

_LAYOUT = (
    "expected under data.root one of: <name>/DIV2K_train_HR/*.png (DIV2K; LR from "
    "<name>/DIV2K_train_LR_bicubic/X{s}/<id>x{s}.png when present, the valid split from "
    "DIV2K_valid_HR/), <name>/HR/*.png with optional <name>/LR_bicubic/X{s}/<stem>x{s}.png "
    "(EDSR benchmark layout), or <name>/*.png|bmp|jpg (HR only, e.g. T91, Set5, Set14, B100; LR "
    "made by bicubic downscaling). Set data.root (or PRUNEBENCH_DATA_ROOT) to the folder holding "
    "them."
)


def make_pair(hr: Tensor, scale: int, lr: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(LR, HR) with HR cropped to exactly scale × the LR size; LR by bicubic when not given."""
    if lr is None:
        hr = crop_to_multiple(hr, scale)
        return bicubic_downscale(hr, scale), hr
    h, w = lr.shape[-2:]
    if hr.shape[-2] < h * scale or hr.shape[-1] < w * scale:
        raise DataNotFoundError(
            f"LR image {h}x{w} does not match HR {tuple(hr.shape[-2:])} at scale {scale}"
        )
    return lr, hr[..., : h * scale, : w * scale]


def resolve_sr_folder(root: Path, name: str, split: str, scale: int) -> tuple[Path, Path | None]:
    """The HR folder and, when stored, the matching bicubic LR folder of one named set."""
    base = root / name
    div2k = "train" if split == "train" else "valid"
    candidates = [
        (base / f"DIV2K_{div2k}_HR", base / f"DIV2K_{div2k}_LR_bicubic" / f"X{scale}"),
        (base / "HR", base / "LR_bicubic" / f"X{scale}"),
    ]
    for hr_dir, lr_dir in candidates:
        if hr_dir.is_dir():
            return hr_dir, lr_dir if lr_dir.is_dir() else None
    if base.is_dir() and list_images(base):
        return base, None
    raise DataNotFoundError(f"SR dataset '{name}' not found at {base}; {_LAYOUT}")


def _find_lr(lr_dir: Path, hr_path: Path, scale: int) -> Path:
    for stem in (f"{hr_path.stem}x{scale}", hr_path.stem):
        for p in (lr_dir / (stem + hr_path.suffix), lr_dir / (stem + ".png")):
            if p.is_file():
                return p
    raise DataNotFoundError(
        f"no LR image for {hr_path.name} in {lr_dir} (expected {hr_path.stem}x{scale}.png)"
    )


def load_sr_folder(root: Path, name: str, split: str, scale: int, channels: int) -> list[Pair]:
    """All (LR, HR) pairs of one named set."""
    hr_dir, lr_dir = resolve_sr_folder(root, name, split, scale)
    files = list_images(hr_dir)
    if not files:
        raise DataNotFoundError(f"no images in {hr_dir}; {_LAYOUT}")
    pairs = []
    for f in files:
        lr = load_image(_find_lr(lr_dir, f, scale), channels) if lr_dir is not None else None
        gray = channels == 3 and is_gray_file(f)
        pairs.append((f.stem, *make_pair(load_image(f, channels), scale, lr), name, gray))
    log.info("%s/%s: %d images (LR %s)", name, split, len(pairs), "stored" if lr_dir else "bicubic")
    return pairs


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _splits(
    train: list[Pair], val: list[Pair], test: list[Pair], cfg: DictConfig, scale: int, seed: int
) -> DataSplits:
    """Wrap loaded pairs as the training patch stream and the whole-image eval splits."""
    if not train or not val or not test:
        raise ConfigError(
            f"SR data needs train, val and test images; got {len(train)}, {len(val)}, {len(test)}"
        )
    batch_size, num_batches = epoch_batches(cfg)
    train_batches = PatchBatches(
        [p[1] for p in train],
        [p[2] for p in train],
        scale=scale,
        patch_size=int(cfg.patch_size),
        batch_size=batch_size,
        num_batches=num_batches,
        augment=bool(cfg.get("augment", True)),
        seed=seed,
    )
    val_crop = cfg.get("val_crop")
    val_items = []
    for _, lr, hr, *_ in val:
        lr_c, top, left = center_crop(lr, val_crop)
        h, w = lr_c.shape[-2:]
        val_items.append(
            (lr_c, hr[..., top * scale : (top + h) * scale, left * scale : (left + w) * scale])
        )
    return DataSplits(
        train=train_batches,
        val=ImageBatches(val_items, [p[0] for p in val], [p[3] for p in val], [p[4] for p in val]),
        test=ImageBatches(
            [(p[1], p[2]) for p in test],
            [p[0] for p in test],
            [p[3] for p in test],
            [p[4] for p in test],
        ),
        info={
            "scale": scale,
            "channels": int(cfg.get("channels", 3)),
            "train_images": len(train),
            "val_images": len(val),
            "test_sets": sorted({p[3] for p in test}),
        },
    )


@DATASETS.register("sr_embedded", task="sr", offline=True)
def build_sr_embedded(cfg: DictConfig, *, scale: int, seed: int) -> DataSplits:
    """Offline SR data from scikit-image's bundled images (the split is named in the config)."""
    channels = int(cfg.get("channels", 3))

    def load(names: list[str], group: str) -> list[Pair]:
        return [(n, *make_pair(bundled_image(n, channels), scale), group, False) for n in names]

    return _splits(
        load(_as_list(cfg.train_images), "train"),
        load(_as_list(cfg.val_images), "val"),
        load(_as_list(cfg.test_images), "skimage"),
        cfg,
        scale,
        seed,
    )


@DATASETS.register("sr_folders", task="sr", offline=True)
def build_sr_folders(cfg: DictConfig, *, scale: int, seed: int) -> DataSplits:
    """SR benchmark folders under `data.root`; validation is `data.val` or held out of train."""
    root = Path(str(cfg.root)).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"data.root {root} is not a folder; {_LAYOUT}")
    channels = int(cfg.get("channels", 3))
    train = [
        p for n in _as_list(cfg.train) for p in load_sr_folder(root, n, "train", scale, channels)
    ]
    val_names = _as_list(cfg.get("val"))
    if val_names:
        val = [p for n in val_names for p in load_sr_folder(root, n, "val", scale, channels)]
    else:
        train, val = holdout_split(train, int(cfg.val_holdout), int(cfg.get("split_seed", 0)))
    test = [p for n in _as_list(cfg.test) for p in load_sr_folder(root, n, "test", scale, channels)]
    return _splits(train, val, test, cfg, scale, seed)
