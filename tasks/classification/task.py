"""Image classification: cross-entropy training, top-1 (and top-5) accuracy, CIFAR-style models."""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from harness.config import to_plain
from harness.errors import ConfigError
from harness.registry import MODELS, TASKS
from harness.task import DataSplits, Task
from tasks.classification.data import build_splits, declared_shape
from tasks.classification.metrics import topk_correct

if TYPE_CHECKING:
    from harness.data import Batch, TensorBatches

__all__ = ["ClassificationTask"]

log = logging.getLogger(__name__)


@TASKS.register("classification")
class ClassificationTask(Task):
    """CIFAR/digits-style classification; `cfg` is the `task` config section.

    `task.batch_size` and `task.eval_batch_size` size the batches; `task.label_smoothing`
    (default 0) applies to the training loss only.
    """

    metric = "top1"
    optimizer = "sgd"
    cpu_bf16 = True  # the loss and top-1 are read from fp32 logits (cross-entropy upcasts)

    def input_shape(self, data_cfg: DictConfig) -> tuple[int, ...]:
        return declared_shape(data_cfg)

    def build_data(self, data_cfg: DictConfig, *, seed: int) -> DataSplits:
        return build_splits(
            data_cfg,
            batch_size=int(self.cfg.get("batch_size", 128)),
            eval_batch_size=int(self.cfg.get("eval_batch_size", 512)),
            seed=seed,
        )

    def build_model(self, model_cfg: DictConfig, data_cfg: DictConfig) -> nn.Module:
        """`MODELS[model.name]` with the data's channels and classes and the model's options.

        Models that take `input_size` (VGG sizes its pooling with it) get the smaller spatial side
        of `data.shape`. Unknown model options raise a `ConfigError` listing the accepted ones.
        """
        name = str(model_cfg.get("name"))
        factory = MODELS.get(name)
        c, h, w = declared_shape(data_cfg)
        params = inspect.signature(factory).parameters
        kwargs = {k: to_plain(v) for k, v in model_cfg.items() if k != "name"}
        unknown = sorted(set(kwargs) - set(params) - {"in_chans", "num_classes", "input_size"})
        if unknown:
            options = sorted(set(params) - {"in_chans", "num_classes", "input_size"})
            raise ConfigError(
                f"model '{name}' has no option(s) {unknown}; its options: {options or 'none'}"
            )
        num_classes = data_cfg.get("num_classes")
        if num_classes is None:
            raise ConfigError("data config lacks `num_classes`; set data.num_classes")
        kwargs.update(in_chans=c, num_classes=int(num_classes))
        if "input_size" in params:
            kwargs["input_size"] = min(h, w)
        return factory(**kwargs)

    def loss(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        x, y = batch
        logits = model(x)
        smoothing = float(self.cfg.get("label_smoothing", 0.0))
        loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
        return {"loss": loss, "output": logits}

    def evaluate(self, model: nn.Module, batches: TensorBatches) -> dict[str, float]:
        """Top-1 (and top-5 when there are more than 10 classes) in percent, and the mean
        unsmoothed cross-entropy. Sums stay on the device; one host sync at the end."""
        correct: Tensor | None = None
        loss_sum = torch.zeros((), device=batches.device)
        n = 0
        ks = (1,)
        with torch.no_grad():
            for x, y in batches:
                logits = model(x).float()
                if correct is None:
                    ks = (1, 5) if logits.shape[1] > 10 else (1,)
                    correct = torch.zeros(len(ks), dtype=torch.int64, device=logits.device)
                correct += topk_correct(logits, y, ks)
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
                n += len(y)
        if correct is None:
            raise ValueError("evaluate got an empty split")
        *counts, total_loss = torch.cat([correct.float(), loss_sum[None]]).tolist()  # sync: once
        out = {f"top{k}": 100.0 * c / n for k, c in zip(ks, counts, strict=True)}
        out["loss"] = total_loss / n
        return out
