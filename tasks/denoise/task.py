"""Additive white Gaussian noise removal (gray or colour), scored as the DnCNN/DHP tables.

Loss L1 by default (DHP trains its restoration nets with L1; DnCNN used MSE: `task.loss=l2`),
Adam. MACs are measured at `task.measure_size` (128×128 in the DHP tables). `evaluate` quantises
the output to 0..255 and returns the mean PSNR and SSIM over the split's images on all of the
image's channels (the gray image for gray denoising), no border shaved; plus
`psnr_<set>`/`ssim_<set>` per benchmark set when the split holds several. The no-op floor is
the noisy input itself, scored the same way (so clamped to 0..255).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from harness.errors import ConfigError
from harness.registry import DATASETS, TASKS
from harness.task import DataSplits, Task
from tasks.restoration import (
    average_scores,
    build_registered_model,
    pixel_loss,
    psnr,
    quantize,
    ssim,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from omegaconf import DictConfig
    from torch import Tensor

    from harness.data import Batch

__all__ = ["DenoiseTask", "denoise_scores"]


def denoise_scores(output: Tensor, clean: Tensor) -> dict[str, Tensor]:
    """Per-image PSNR and SSIM of the quantised output against the clean image (0..1 inputs)."""
    out, ref = quantize(output), quantize(clean)
    return {"psnr": psnr(out, ref), "ssim": ssim(out, ref)}


@TASKS.register("denoise")
class DenoiseTask(Task):
    """Noisy → clean; σ and the channel count come from the data config."""

    metric = "psnr"
    optimizer = "adam"

    def noop_model(self) -> nn.Module:
        return nn.Identity()

    def input_shape(self, data_cfg: DictConfig) -> tuple[int, ...]:
        size = int(self.cfg.get("measure_size", 128))
        return (int(data_cfg.get("channels", 1)), size, size)

    def build_data(self, data_cfg: DictConfig, *, seed: int) -> DataSplits:
        name = str(data_cfg.name)
        if DATASETS.info(name).get("task") != "denoise":
            known = [n for n in DATASETS.names() if DATASETS.info(n).get("task") == "denoise"]
            raise ConfigError(f"dataset '{name}' is not a denoising dataset; use one of: {known}")
        return DATASETS.get(name)(data_cfg, seed=seed)

    def build_model(self, model_cfg: DictConfig, data_cfg: DictConfig) -> nn.Module:
        channels = int(data_cfg.get("channels", 1))
        return build_registered_model(model_cfg, "denoise", in_chans=channels)

    def loss(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        noisy, clean = batch
        out = model(noisy)
        loss = pixel_loss(str(self.cfg.get("loss", "l1")))(out.float(), clean)
        return {"loss": loss, "output": out}

    def evaluate(self, model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
        return average_scores(batches, lambda b: denoise_scores(model(b[0]), b[1]))
