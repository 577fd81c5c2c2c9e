"""Iterables the training loop uses in place of `TensorBatches`: `PatchBatches` (random patches
drawn on the device from whole images held as uint8) and `ImageBatches` (whole images of varying
sizes, batch 1, for validation and test); `epoch_batches` sizes an epoch from the data config."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from harness.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)

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
    downscaling (up to MATLAB's uint8 rounding between its row and column passes, ≤ 2 grey
    levels for a transpose), so the same `tf` on an LR and its HR patch keeps them aligned.
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
    item k (Set5, B100 …) so the task can report per-set scores; `gray[k]` says item k came
    from a gray file (Set14's `bridge` in an RGB set), which the SR tables score differently.
    """

    batch_size = 1

    def __init__(
        self,
        items: Sequence[tuple[Tensor, ...]],
        names: Sequence[str],
        groups: Sequence[str] | None = None,
        gray: Sequence[bool] | None = None,
    ) -> None:
        if not items:
            raise ValueError("ImageBatches got no images")
        if any(x is not None and len(x) != len(items) for x in (names, groups, gray)):
            raise ValueError("items, names, groups and gray must have the same length")
        self.items = [tuple(items_k) for items_k in items]
        self.names = list(names)
        self.groups = list(groups) if groups is not None else ["all"] * len(items)
        self.gray = list(gray) if gray is not None else [False] * len(items)

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
