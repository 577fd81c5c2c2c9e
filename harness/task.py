"""The task contract: what classification, super-resolution and denoising each provide.

The pipeline, the trainer and every method reach data, models and metrics only through this
interface, so one training loop serves all three tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from harness.data import Batch, TensorBatches

__all__ = ["DataSplits", "Task"]


@dataclass
class DataSplits:
    """Train / validation / test batches; validation is held out of the training data."""

    train: TensorBatches
    val: TensorBatches
    test: TensorBatches
    info: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> DataSplits:
        for split in (self.train, self.val, self.test):
            split.to(device)
        return self


class Task(ABC):
    """One task: builds its data and models, computes the loss of a batch, scores a split.

    Subclasses register with `@TASKS.register("<name>")` and are built as `Task(cfg.task)`.
    """

    #: headline quality metric, higher is better ("top1", "psnr")
    metric: ClassVar[str]
    #: optimizer family the task's papers use ("sgd" or "adam")
    optimizer: ClassVar[str] = "sgd"
    #: whether auto precision may train this task in bf16 on a CPU (`harness.runtime.precision`):
    #: no where the metric reads output pixels that bf16 would round (PSNR)
    cpu_bf16: ClassVar[bool] = False

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def input_shape(self, data_cfg: DictConfig) -> tuple[int, ...]:
        """Shape of one input sample at which MACs are measured, e.g. (3, 32, 32).

        Declared by config so `measure` works without loading any data.
        """

    @abstractmethod
    def build_data(self, data_cfg: DictConfig, *, seed: int) -> DataSplits:
        """Load the dataset named by `data_cfg.name` and split off validation (CPU tensors)."""

    @abstractmethod
    def build_model(self, model_cfg: DictConfig, data_cfg: DictConfig) -> nn.Module:
        """Build a registered model sized for this data (channels, classes, scale)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        """Forward a training batch; returns at least `loss` (a scalar tensor on the device)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, batches: TensorBatches) -> dict[str, float]:
        """Score a split in eval mode; returns at least `self.metric`. Called under no_grad."""

    def noop_model(self) -> nn.Module | None:
        """The do-nothing restoration whose score is a result's floor (the noisy input, bicubic
        upsampling), scored by `evaluate` on the same images; None where a task has none."""
        return None

    def example_input(self, data_cfg: DictConfig, batch: int = 1) -> Tensor:
        return torch.randn(batch, *self.input_shape(data_cfg))
