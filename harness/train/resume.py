"""Snapshot and restore a fit between epochs, exactly.

A successive-halving study stops trials at rungs and a killed trial is retried from its last
rung; either way the continued fit must be the fit that never stopped. So a snapshot holds
everything the remaining epochs read: the weights, the optimizer's and the schedule's state,
the loop's epoch and step, the best-validation weights `fit` restores at the end, the batch
stream's generator (shuffling and augmentation) and the global Python / NumPy / torch RNGs.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import PruneBenchError
from harness.train.hooks import LoopState

__all__ = ["SnapshotMismatch", "load_snapshot", "restore", "save_snapshot", "snapshot"]

#: bumped when the layout changes: an older snapshot is refused, not misread
VERSION = 1


class SnapshotMismatch(PruneBenchError):
    """A snapshot that does not fit the fit it should resume (another model or optimizer)."""


def snapshot(s: LoopState) -> dict[str, Any]:
    """Everything the rest of the fit reads, copied (the fit may go on and change it)."""
    cpu = lambda t: t.detach().to("cpu", copy=True)  # noqa: E731
    return {
        "version": VERSION,
        "epoch": s.epoch,
        "step": s.step,
        "epochs": s.epochs,
        "metrics": dict(s.metrics),
        "history": [dict(h) for h in s.history],
        "best_val": s.best_val,
        "best_epoch": s.best_epoch,
        "best_state": None
        if s.best_state is None
        else {k: cpu(v) for k, v in s.best_state.items()},
        "model": {k: cpu(v) for k, v in s.model.state_dict().items()},
        "optimizer": _cpu_tree(s.optimizer.state_dict()),
        "scheduler": None if s.scheduler is None else s.scheduler.state_dict(),
        "batches": None if s.batches is None else s.batches.generator.get_state(),
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
    }


def restore(s: LoopState, snap: dict[str, Any]) -> None:
    """Put a `snapshot` back into a fresh fit's state (same model, optimizer and schedule
    built the same way); refuses one of another layout, model or budget."""
    if snap.get("version") != VERSION:
        raise SnapshotMismatch(f"snapshot version {snap.get('version')} is not {VERSION}")
    if snap["epochs"] != s.epochs:
        raise SnapshotMismatch(
            f"snapshot of a {snap['epochs']}-epoch fit cannot resume a {s.epochs}-epoch one"
        )
    try:
        s.model.load_state_dict(snap["model"])
        s.optimizer.load_state_dict(snap["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise SnapshotMismatch(f"snapshot does not fit this model/optimizer: {e}") from e
    if s.scheduler is not None and snap["scheduler"] is not None:
        s.scheduler.load_state_dict(snap["scheduler"])
    device = next(iter(s.model.parameters())).device
    s.epoch, s.step = int(snap["epoch"]), int(snap["step"])
    s.metrics = dict(snap["metrics"])
    s.history = [*snap["history"], {"epoch": s.epoch, **s.metrics}]
    s.best_val, s.best_epoch = snap["best_val"], snap["best_epoch"]
    s.best_state = (
        None
        if snap["best_state"] is None
        else {k: v.to(device) for k, v in snap["best_state"].items()}
    )
    if s.batches is not None and snap["batches"] is not None:
        s.batches.generator.set_state(snap["batches"])
    rng = snap["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_snapshot(path: str | Path, snap: dict[str, Any]) -> None:
    """Write atomically: a worker killed mid-write leaves the previous snapshot intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(snap, tmp)
    os.replace(tmp, path)


def load_snapshot(path: str | Path) -> dict[str, Any]:
    """A snapshot `save_snapshot` wrote (our own file: RNG states need full unpickling)."""
    return torch.load(Path(path), map_location="cpu", weights_only=False)


def _cpu_tree(tree: Any) -> Any:
    """A copy of a (nested) state dict with every tensor on the CPU."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {k: _cpu_tree(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_cpu_tree(v) for v in tree)
    return tree
