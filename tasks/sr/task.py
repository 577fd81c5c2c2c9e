"""Single-image super-resolution (×2/×3/×4, bicubic degradation), scored as the DHP tables.

Loss L1 (EDSR, DHP), Adam. MACs are measured at the LR input `task.measure_size` (128×128 in
the DHP tables). `evaluate` returns the mean PSNR and SSIM on Y (`scale` pixels shaved) over
the split's images, plus `psnr_<set>`/`ssim_<set>` per benchmark set when the split holds
several (e.g. `data.test=[Set5,Set14,B100]`). Gray files in an RGB set are scored on their gray
values as the MATLAB tables do (`task.gray_images=table`), or on Y of the replicated gray image as
EDSR/BasicSR do (`task.gray_images=luma`). The no-op floor is MATLAB-bicubic upsampling of the LR.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import torch
from torch import nn

from harness.errors import ConfigError
from harness.registry import DATASETS, TASKS
from harness.task import DataSplits, Task
from tasks.restoration import average_scores, build_registered_model, pixel_loss
from tasks.restoration.degrade import bicubic_upscale
from tasks.sr.metrics import sr_scores

if TYPE_CHECKING:
    from collections.abc import Iterable

    from omegaconf import DictConfig
    from torch import Tensor

    from harness.data import Batch

__all__ = ["SuperResolutionTask"]

SCALES = (2, 3, 4, 8)
GRAY_MODES = ("table", "luma")


class BicubicUpscale(nn.Module):
    """LR (0..1, from uint8) → MATLAB `imresize(lr, s, 'bicubic')` on uint8, back on 0..1: the
    bicubic row of the SR tables, the floor every SR result is read against."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        lr = x.float().mul(255.0).clamp(0.0, 255.0).round().to(torch.uint8)
        return bicubic_upscale(lr, self.scale).float().div(255.0)


@TASKS.register("sr")
class SuperResolutionTask(Task):
    """LR → HR super-resolution; `task.scale` sets the factor (`scale=` at the top level too)."""

    metric = "psnr"
    optimizer = "adam"

    @property
    def scale(self) -> int:
        scale = int(self.cfg.get("scale", 4))
        if scale not in SCALES:
            raise ConfigError(f"task.scale must be one of {SCALES}, got {scale}")
        return scale

    @property
    def gray_mode(self) -> str:
        mode = str(self.cfg.get("gray_images", "table"))
        if mode not in GRAY_MODES:
            raise ConfigError(f"task.gray_images must be one of {GRAY_MODES}, got '{mode}'")
        return mode

    def noop_model(self) -> nn.Module:
        return BicubicUpscale(self.scale)

    def input_shape(self, data_cfg: DictConfig) -> tuple[int, ...]:
        size = int(self.cfg.get("measure_size", 128))
        return (int(data_cfg.get("channels", 3)), size, size)

    def build_data(self, data_cfg: DictConfig, *, seed: int) -> DataSplits:
        _ = self.gray_mode  # a bad task.gray_images is refused here, before any training
        name = str(data_cfg.name)
        if DATASETS.info(name).get("task") != "sr":
            sr_sets = [n for n in DATASETS.names() if DATASETS.info(n).get("task") == "sr"]
            raise ConfigError(f"dataset '{name}' is not an SR dataset; use one of: {sr_sets}")
        return DATASETS.get(name)(data_cfg, scale=self.scale, seed=seed)

    def build_model(self, model_cfg: DictConfig, data_cfg: DictConfig) -> nn.Module:
        channels = int(data_cfg.get("channels", 3))
        return build_registered_model(model_cfg, "sr", in_chans=channels, scale=self.scale)

    def loss(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        lr, hr = batch
        out = model(lr)
        loss = pixel_loss(str(self.cfg.get("loss", "l1")))(out.float(), hr)
        return {"loss": loss, "output": out}

    def evaluate(self, model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
        scale = self.scale
        gray = list(getattr(batches, "gray", None) or []) if self.gray_mode == "table" else []
        k = itertools.count()  # average_scores scores the batches in order

        def score(b: Batch) -> dict[str, Tensor]:
            i = next(k)
            return sr_scores(model(b[0]), b[1], scale, gray=i < len(gray) and gray[i])

        return average_scores(batches, score)
