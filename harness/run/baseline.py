"""The shared baseline: trained once per (task, data, model, train budget, seed) and cached.

Every method of a comparison starts from the same checkpoint, and studies never retrain it. The
cache key hashes everything that determines the weights; writes are atomic.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf

from harness.errors import CheckpointError, load_problem
from harness.runtime.atomic import atomic_write, clean_stale_temps

if TYPE_CHECKING:
    from collections.abc import Callable

    from omegaconf import DictConfig
    from torch import nn

__all__ = ["Baseline", "baseline_key", "load_or_train_baseline"]

log = logging.getLogger(__name__)

CACHE_VERSION = 1
#: a reloaded baseline's validation metric may differ this much from the recorded one (AMP,
#: cuDNN algorithm choice); an edited or damaged file differs by far more
VERIFY_REL_TOL = 0.01
VERIFY_ABS_TOL = 0.01


@dataclass
class Baseline:
    val: dict[str, float]
    test: dict[str, float]
    wall_s: float
    path: Path | None
    cached: bool


def baseline_key(cfg: DictConfig, precision: str = "fp32") -> str:
    """The cache key of `cfg`'s baseline: what changes its weights (task, data, model, training,
    seed, and the precision it trains at; fp32 keys are those of before precision was keyed)."""
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
    if precision != "fp32":
        parts["precision"] = precision
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _one_at_a_time(fn: Callable[..., Baseline]) -> Callable[..., Baseline]:
    """Concurrent sweep jobs on one cache: one trains the baseline, the others wait for the lock
    and then load it (an fcntl lock file beside the checkpoint)."""

    @functools.wraps(fn)
    def locked(cfg: DictConfig, *args: Any, **kwargs: Any) -> Baseline:
        import fcntl

        cache = Path(cfg.cache_dir) / "baselines"
        cache.mkdir(parents=True, exist_ok=True)
        key = baseline_key(cfg, kwargs.get("precision", "fp32"))
        lock = cache / f"{cfg.model.name}-{cfg.data.name}-s{cfg.seed}-{key}.lock"
        with open(lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                return fn(cfg, *args, **kwargs)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    return locked


@_one_at_a_time
def load_or_train_baseline(
    cfg: DictConfig,
    model: nn.Module,
    train: Callable[[nn.Module], tuple[dict[str, float], dict[str, float], float]],
    verify: Callable[[nn.Module], dict[str, float]] | None = None,
    *,
    precision: str = "fp32",
) -> Baseline:
    """Load the cached baseline weights into `model`, or train them with `train(model)`.

    `train` returns (val metrics, test metrics, wall seconds); `verify(model)` re-measures the
    loaded weights' validation metrics, which must match the recorded ones. A corrupt, non-finite
    or mismatching cache file raises CheckpointError naming it; nothing is overwritten silently.
    `precision` (the run's, `Runtime.precision`) keys the cache: a bf16 baseline is never
    loaded into an fp32 run, nor the reverse.
    """
    cache = Path(cfg.cache_dir) / "baselines"
    key = baseline_key(cfg, precision)
    path = cache / f"{cfg.model.name}-{cfg.data.name}-s{cfg.seed}-{key}.pt"
    clean_stale_temps(cache)
    if path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(blob["state_dict"])
            stored = (blob["val"], blob["test"], float(blob["wall_s"]))
        except Exception as e:  # noqa: BLE001 - any failure here means the file is unusable
            raise CheckpointError(
                f"cached baseline {path} is corrupt or does not match model "
                f"'{cfg.model.name}' ({load_problem(e)}); delete it to retrain"
            ) from e
        _verify(path, blob["state_dict"], stored[0], verify(model) if verify else None)
        log.info("baseline loaded from cache %s (weights finite, validation re-checked)", path)
        return Baseline(*stored, path, cached=True)
    val, test, wall_s = train(model)
    blob: dict[str, Any] = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "val": val,
        "test": test,
        "wall_s": wall_s,
    }
    bad = _non_finite(blob["state_dict"])
    if bad:
        raise CheckpointError(
            f"the trained baseline has non-finite weights ({', '.join(bad[:3])}); not cached. "
            "Lower train.lr or check the data"
        )
    atomic_write(path, lambda tmp: torch.save(blob, tmp))
    log.info("baseline cached at %s", path)
    return Baseline(val, test, wall_s, path, cached=False)


def _non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def _verify(
    path: Path,
    state: dict[str, torch.Tensor],
    stored: dict[str, float],
    measured: dict[str, float] | None,
) -> None:
    """Refuse a cache whose weights are not finite or whose recorded validation metrics are not
    what the weights give now (a damaged or edited file would otherwise report fake numbers)."""
    fix = "delete it to retrain"
    bad = _non_finite(state)
    if bad:
        raise CheckpointError(
            f"cached baseline {path} has non-finite weights ({', '.join(bad[:3])}); {fix}"
        )
    for key, value in (measured or {}).items():
        recorded = stored.get(key)
        if recorded is None or not math.isfinite(float(recorded)):
            raise CheckpointError(f"cached baseline {path} records val {key}={recorded}; {fix}")
        if abs(float(recorded) - value) > VERIFY_REL_TOL * abs(value) + VERIFY_ABS_TOL:
            raise CheckpointError(
                f"cached baseline {path} records val {key}={float(recorded):.4g} but its weights "
                f"give {value:.4g} (damaged or edited file); {fix}"
            )
