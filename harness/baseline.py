"""The shared baseline: trained once per (task, data, model, train budget, seed) and cached.

Every method of a comparison starts from the same checkpoint, and studies never retrain it. The
cache key hashes everything that determines the weights; writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf

from harness.errors import CheckpointError

if TYPE_CHECKING:
    from collections.abc import Callable

    from omegaconf import DictConfig
    from torch import nn

__all__ = ["Baseline", "baseline_key", "load_or_train_baseline"]

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class Baseline:
    val: dict[str, float]
    test: dict[str, float]
    wall_s: float
    path: Path | None
    cached: bool


def baseline_key(cfg: DictConfig) -> str:
    parts = {
        "v": CACHE_VERSION,
        "task": OmegaConf.to_container(cfg.task, resolve=True),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "train": OmegaConf.to_container(cfg.train, resolve=True),
        "seed": cfg.seed,
    }
    for volatile in ("root", "path", "download"):  # where the data lives does not change it
        parts["data"].pop(volatile, None)
    if parts["data"].get("train_subset") is None:  # the default keeps existing cache keys
        parts["data"].pop("train_subset", None)
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_train_baseline(
    cfg: DictConfig,
    model: nn.Module,
    train: Callable[[nn.Module], tuple[dict[str, float], dict[str, float], float]],
) -> Baseline:
    """Load the cached baseline weights into `model`, or train them with `train(model)`.

    `train` returns (val metrics, test metrics, wall seconds). A corrupt cache file raises
    CheckpointError naming it; nothing is overwritten silently.
    """
    cache = Path(cfg.cache_dir) / "baselines"
    path = cache / f"{cfg.model.name}-{cfg.data.name}-s{cfg.seed}-{baseline_key(cfg)}.pt"
    if path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(blob["state_dict"])
        except Exception as e:  # noqa: BLE001 - any failure here means the file is unusable
            raise CheckpointError(
                f"cached baseline {path} is corrupt or does not match model "
                f"'{cfg.model.name}' ({type(e).__name__}: {e}); delete it to retrain"
            ) from e
        log.info("baseline loaded from cache %s", path)
        return Baseline(blob["val"], blob["test"], float(blob["wall_s"]), path, cached=True)
    val, test, wall_s = train(model)
    blob: dict[str, Any] = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "val": val,
        "test": test,
        "wall_s": wall_s,
    }
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("baseline cached at %s", path)
    return Baseline(val, test, wall_s, path, cached=False)
