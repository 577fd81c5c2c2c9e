"""Optimizer and per-step LR schedule from a `train`/`finetune` config section."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from harness.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from omegaconf import DictConfig

__all__ = ["build_optimizer", "build_scheduler"]


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], cfg: DictConfig
) -> torch.optim.Optimizer:
    """SGD (momentum, optional nesterov) or Adam; weight decay is not rescaled by lr. `params`:
    parameters or param groups (dicts whose own keys, e.g. lr, override `cfg`'s); frozen
    parameters (requires_grad=False) are left out."""
    name = cfg.optimizer
    params = _trainable(params)
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.get("momentum", 0.9),
            weight_decay=cfg.weight_decay,
            nesterov=cfg.get("nesterov", False),
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer '{name}'; known: adam, sgd")


def _trainable(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
) -> list[torch.nn.Parameter] | list[dict[str, Any]]:
    items = list(params)
    if items and isinstance(items[0], dict):
        return [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in items]
    return [p for p in items if p.requires_grad]


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: DictConfig, *, epochs: int, steps_per_epoch: int
) -> LambdaLR:
    """Per-step multiplier: `cosine` (to 0, optional warmup), `step` (×gamma at epoch milestones),
    or `constant`. Per-step so that one-epoch budgets still anneal."""
    total = max(1, epochs * steps_per_epoch)
    warmup = int(cfg.get("warmup_epochs", 0) * steps_per_epoch)
    kind = cfg.get("schedule", "cosine")
    if kind == "cosine":

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            t = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    elif kind == "step":
        milestones = [int(m * steps_per_epoch) for m in cfg.get("milestones", [])]
        gamma = cfg.get("gamma", 0.1)

        def factor(step: int) -> float:
            return gamma ** sum(step >= m for m in milestones)

    elif kind == "constant":

        def factor(step: int) -> float:
            return 1.0

    else:
        raise ConfigError(f"unknown schedule '{kind}'; known: constant, cosine, step")
    return LambdaLR(optimizer, factor)
