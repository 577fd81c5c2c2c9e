"""Shared machinery of the restoration tasks (super-resolution and denoising).

Image IO (folders, scikit-image's bundled images), bicubic degradation, the PSNR/SSIM metrics of
the EDSR/DnCNN/DHP tables, and two iterables the training loop can use in place of
`TensorBatches`: `PatchBatches` (random patches drawn on the device from whole images held as
uint8) and `ImageBatches` (whole images of varying sizes, batch 1, for validation and test).
"""

from __future__ import annotations

import copy
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from harness.errors import ConfigError, DataNotFoundError
from harness.registry import MODELS

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from torch import nn

__all__ = [
    "BUNDLED_IMAGES",
    "IMAGE_EXTS",
    "ImageBatches",
    "PatchBatches",
    "average_scores",
    "bicubic_downscale",
    "build_registered_model",
    "bundled_image",
    "center_crop",
    "crop_to_multiple",
    "dihedral",
    "epoch_batches",
    "holdout_split",
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

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------------
# image IO


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


def epoch_batches(cfg: DictConfig) -> tuple[int, int]:
    """(batch size, batches per epoch) from `data.batch_size` and `data.patches_per_epoch`.

    `patches_per_epoch` is the knob that makes a restoration epoch CPU-sized; a value below one
    batch would silently train on a single batch, so it is refused.
    """
    batch_size, patches = cfg.get("batch_size"), cfg.get("patches_per_epoch")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"data.batch_size={batch_size!r} must be a positive whole number")
    if isinstance(patches, bool) or not isinstance(patches, int) or patches < batch_size:
        raise ConfigError(
            f"data.patches_per_epoch={patches!r} must be a whole number ≥ data.batch_size "
            f"({batch_size}); an epoch is patches_per_epoch // batch_size batches, e.g. "
            f"data.patches_per_epoch={10 * batch_size}"
        )
    return batch_size, patches // batch_size


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


# ---------------------------------------------------------------------------------------------
# degradation


def crop_to_multiple(img: Tensor, scale: int) -> Tensor:
    """Crop [..., H, W] at the top-left so H and W are multiples of `scale` (EDSR protocol)."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def bicubic_downscale(hr: Tensor, scale: int) -> Tensor:
    """uint8 [C, H, W] → uint8 [C, H/s, W/s] by antialiased bicubic (a = −0.5).

    torch's antialiased bicubic widens the kernel by `scale` like MATLAB's `imresize`; it agrees
    with Pillow's BICUBIC to ~0.1 grey levels on average and differs from MATLAB only near the
    borders. `hr` must already be cropped to a multiple of `scale`. The result is rounded to
    uint8, as the stored LR images of DIV2K are.
    """
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of scale {scale}; crop it first")
    x = hr.unsqueeze(0).float()  # [1, C, H, W] on 0..255
    lr = F.interpolate(
        x, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True
    )
    return lr.round().clamp(0, 255).to(torch.uint8)[0]


# ---------------------------------------------------------------------------------------------
# metrics (inputs on the 0..255 scale, [N, C, H, W]; one score per image)


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


# ---------------------------------------------------------------------------------------------
# iterables the training loop consumes

PatchTransform = Callable[[tuple[Tensor, ...], torch.Generator], tuple[Tensor, ...]]


class _FlatImages:
    """Many uint8 [C, H, W] images of different sizes packed into one flat buffer.

    Patches are then one `gather` with computed indices: no Python loop over the batch, no
    padding, and the data can sit on the GPU.
    """

    def __init__(self, images: Sequence[Tensor]) -> None:
        chans = {int(im.shape[0]) for im in images}
        if len(chans) != 1:
            raise ValueError(f"all images must have the same channel count, got {sorted(chans)}")
        self.channels = chans.pop()
        sizes = [im.numel() for im in images]
        self.buffer = torch.cat([im.reshape(-1) for im in images])
        offsets = torch.tensor([0, *sizes[:-1]], dtype=torch.long).cumsum(0)
        hw = torch.tensor([list(im.shape[-2:]) for im in images], dtype=torch.long)
        self.meta = torch.cat([offsets[:, None], hw], dim=1)  # [n, 3]: offset, H, W

    def to(self, device: torch.device | str) -> None:
        self.buffer, self.meta = self.buffer.to(device), self.meta.to(device)

    def gather(self, img: Tensor, y: Tensor, x: Tensor, size: int) -> Tensor:
        """Patches [B, C, size, size] with top-left (y, x) in images `img` (all [B])."""
        dev = self.buffer.device
        off, h, w = self.meta[img].unbind(1)  # [B] each
        r = torch.arange(size, device=dev)
        ch = torch.arange(self.channels, device=dev).view(1, -1, 1, 1)
        idx = (
            (off + y * w + x).view(-1, 1, 1, 1)
            + ch * (h * w).view(-1, 1, 1, 1)
            + r.view(1, 1, -1, 1) * w.view(-1, 1, 1, 1)
            + r.view(1, 1, 1, -1)
        )
        return self.buffer[idx]  # [B, C, P, P] uint8


def dihedral(x: Tensor, tf: Tensor) -> Tensor:
    """Apply one of the 8 flip/rot90 transforms per sample: tf [B] in 0..7.

    Bit 2 transposes, bit 0 flips rows, bit 1 flips columns. Each commutes with bicubic
    downscaling, so applying the same `tf` to an LR and its HR patch keeps them aligned.
    """
    t = tf.view(-1, 1, 1, 1)
    x = torch.where(t & 4 > 0, x.transpose(-1, -2), x)
    x = torch.where(t & 1 > 0, x.flip(-2), x)
    return torch.where(t & 2 > 0, x.flip(-1), x)


class PatchBatches:
    """Random aligned patches from whole images, drawn on the data's device; a fixed-size epoch.

    Each batch picks `batch_size` images uniformly (EDSR's habit), a uniformly random patch in
    each, and one of the 8 flip/rot90 transforms per patch (same for source and target). The
    source patch is `patch_size` pixels, the target patch `patch_size · scale` at the matching
    place, so LR and HR stay aligned. Yields float tensors on 0..1: `(source, target)`, or
    `(source,)` when there are no targets; `transform(batch, generator)` then maps the batch
    (denoising adds noise there). Randomness comes from a generator on the data's device seeded
    with `seed`, so a run is reproducible on a given device type.
    """

    def __init__(
        self,
        sources: Sequence[Tensor],
        targets: Sequence[Tensor] | None = None,
        *,
        scale: int = 1,
        patch_size: int,
        batch_size: int,
        num_batches: int,
        augment: bool = True,
        transform: PatchTransform | None = None,
        seed: int = 0,
    ) -> None:
        if num_batches < 1:
            raise ConfigError(f"an epoch needs at least one batch, got {num_batches}")
        keep = [
            k
            for k, s in enumerate(sources)
            if min(s.shape[-2:]) >= patch_size
            and (targets is None or min(targets[k].shape[-2:]) >= patch_size * scale)
        ]
        if len(keep) < len(sources):
            log.warning(
                "%d of %d training images are smaller than a %dpx patch; skipped",
                len(sources) - len(keep),
                len(sources),
                patch_size,
            )
        if not keep:
            raise ConfigError(
                f"no training image is at least {patch_size}px (data.patch_size); lower it"
            )
        self.source = _FlatImages([sources[k] for k in keep])
        self.target = _FlatImages([targets[k] for k in keep]) if targets is not None else None
        self.num_images = len(keep)
        self.scale = scale
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.augment = augment
        self.transform = transform
        self.seed = seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @property
    def device(self) -> torch.device:
        return self.source.buffer.device

    @property
    def num_samples(self) -> int:
        return self.num_batches * self.batch_size

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        g, dev, b, p = self.generator, self.device, self.batch_size, self.patch_size
        for _ in range(self.num_batches):
            img = torch.randint(self.num_images, (b,), generator=g, device=dev)
            _, h, w = self.source.meta[img].unbind(1)
            y = (torch.rand(b, generator=g, device=dev) * (h - p + 1)).long().clamp_max(h - p)
            x = (torch.rand(b, generator=g, device=dev) * (w - p + 1)).long().clamp_max(w - p)
            patches = [self.source.gather(img, y, x, p)]
            if self.target is not None:
                s = self.scale
                patches.append(self.target.gather(img, y * s, x * s, p * s))
            if self.augment:
                tf = torch.randint(8, (b,), generator=g, device=dev)
                patches = [dihedral(t, tf) for t in patches]
            batch = tuple(t.float().div_(255) for t in patches)
            yield self.transform(batch, g) if self.transform else batch

    def fork(self, seed: int) -> PatchBatches:
        """Same images (shared, not copied), own patch/augmentation/noise stream from `seed`, so
        one stage (a method's calibration or search) never shifts another stage's batches."""
        twin = copy.copy(self)
        twin.seed = seed
        twin.generator = torch.Generator(device=self.device).manual_seed(seed)
        return twin

    def to(self, device: torch.device | str) -> PatchBatches:
        """Move the images once; the generator restarts from `seed` on the new device."""
        self.source.to(device)
        if self.target is not None:
            self.target.to(device)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        return self


class ImageBatches:
    """Whole images one at a time (sizes vary), for validation and test.

    `items[k]` is a tuple of tensors [C, H, W]; uint8 ones are yielded as floats on 0..1, float
    ones as they are (noisy inputs are not clipped). `groups[k]` names the benchmark set of
    item k (Set5, B100 …) so the task can report per-set scores.
    """

    batch_size = 1

    def __init__(
        self,
        items: Sequence[tuple[Tensor, ...]],
        names: Sequence[str],
        groups: Sequence[str] | None = None,
    ) -> None:
        if not items:
            raise ValueError("ImageBatches got no images")
        if len(names) != len(items) or (groups is not None and len(groups) != len(items)):
            raise ValueError("items, names and groups must have the same length")
        self.items = [tuple(items_k) for items_k in items]
        self.names = list(names)
        self.groups = list(groups) if groups is not None else ["all"] * len(items)

    @property
    def num_samples(self) -> int:
        return len(self.items)

    @property
    def device(self) -> torch.device:
        return self.items[0][0].device

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        for item in self.items:
            yield tuple(
                t.unsqueeze(0).float().div(255) if t.dtype == torch.uint8 else t.unsqueeze(0)
                for t in item
            )

    def to(self, device: torch.device | str) -> ImageBatches:
        self.items = [tuple(t.to(device) for t in item) for item in self.items]
        return self


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


def mean_of(values: list[Tensor]) -> float:
    """Mean of per-image score tensors with a single host sync."""
    if not values:
        return math.nan
    return torch.cat([v.reshape(-1) for v in values]).mean().item()  # sync: once per metric


# ---------------------------------------------------------------------------------------------
# task helpers shared by SR and denoising

_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l1": F.l1_loss,
    "l2": F.mse_loss,
    "mse": F.mse_loss,
}


def pixel_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The pixel loss named by `task.loss`: l1 (EDSR, DHP) or l2/mse (DnCNN)."""
    if name not in _LOSSES:
        raise ConfigError(f"unknown task.loss '{name}'; known: {', '.join(sorted(_LOSSES))}")
    return _LOSSES[name]


def build_registered_model(model_cfg: DictConfig, task: str, **fixed: int) -> nn.Module:
    """Build `model_cfg.name` from MODELS with the config's other keys as keyword arguments.

    `fixed` (in_chans, scale) comes from the task and data and wins over the model config.
    """
    from omegaconf import OmegaConf

    name = str(model_cfg.name)
    fn = MODELS.get(name)
    owner = MODELS.info(name).get("task")
    if owner != task:
        known = ", ".join(n for n in MODELS.names() if MODELS.info(n).get("task") == task)
        raise ConfigError(
            f"model '{name}' is registered for task '{owner}', not '{task}'; use one of: {known}"
        )
    kwargs = OmegaConf.to_container(model_cfg, resolve=True)
    kwargs = {k: v for k, v in kwargs.items() if k != "name" and not str(k).startswith("_")}
    try:
        return fn(**{**kwargs, **fixed})
    except TypeError as e:  # an unknown or misspelt key in conf/model/<name>.yaml
        raise ConfigError(f"model '{name}' rejected its config {kwargs}: {e}") from e


def average_scores(
    batches: Iterable[tuple[Tensor, ...]],
    score_fn: Callable[[tuple[Tensor, ...]], dict[str, Tensor]],
) -> dict[str, float]:
    """Mean per-image scores over a split, plus `<metric>_<set>` when it spans several sets."""
    groups = list(getattr(batches, "groups", None) or [])
    per_metric: dict[str, list[Tensor]] = defaultdict(list)
    per_group: dict[tuple[str, str], list[Tensor]] = defaultdict(list)
    for k, batch in enumerate(batches):
        group = groups[k] if k < len(groups) else "all"
        for metric, value in score_fn(batch).items():
            per_metric[metric].append(value)
            per_group[(metric, group)].append(value)
    result = {m: mean_of(v) for m, v in per_metric.items()}
    if len(set(groups)) > 1:
        result.update({f"{m}_{g}": mean_of(v) for (m, g), v in per_group.items()})
    return result
