"""Task helpers shared by SR and denoising: the pixel loss, the model built from its registry
entry, and the per-set average of per-image scores."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor

from harness.errors import ConfigError
from harness.registry import MODELS
from tasks.restoration.metrics import mean_of

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from torch import nn

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
