"""The one training loop: baseline training, fine-tuning and train-time methods all run here."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from harness.errors import NonFiniteLossError
from harness.runtime.device import Runtime, eval_mode
from harness.runtime.progress import track_steps
from harness.train.compile import CompiledModel, compiled, count_phase, forward_for, twin_of
from harness.train.hooks import Hook, LoopState

if TYPE_CHECKING:
    from torch import nn
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

    from harness.data import TensorBatches
    from harness.task import Task

__all__ = ["FitResult", "eval_compiled", "evaluate", "fit"]

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str = "epochs"
    steps: int = 0
    epochs_run: int = 0
    wall_s: float = 0.0
    best_epoch: int | None = None
    best_val: float | None = None
    compiled: bool = False  # the phase's training steps and validation ran the compiled twin


def evaluate(
    task: Task, model: nn.Module, batches: TensorBatches, runtime: Runtime
) -> dict[str, float]:
    """Score a split in eval mode under the run's autocast, in the model's mode: compiled when it
    was trained compiled (or `compile: true`), eagerly otherwise (`eval_compiled` tells)."""
    net = twin_of(model)
    if net is None and runtime.compile == "on":
        net = compiled(model, runtime.cache_dir)
    with eval_mode(model), runtime.autocast():
        return task.evaluate(net if net is not None and net.active else model, batches)


def eval_compiled(model: nn.Module) -> bool:
    """Whether `evaluate` (and `measure_latency`) run `model` compiled now."""
    return twin_of(model) is not None


def fit(
    model: nn.Module,
    task: Task,
    train: TensorBatches,
    *,
    epochs: int,
    optimizer: Optimizer,
    runtime: Runtime,
    scheduler: LRScheduler | None = None,
    hooks: Sequence[Hook] = (),
    val: TensorBatches | None = None,
    select_best: bool = True,
    name: str = "train",
    state: LoopState | None = None,
) -> FitResult:
    """Train `model` in place for up to `epochs` epochs.

    With `val` and `select_best`, the weights of the epoch with the best validation metric are
    restored at the end (selection on validation; the test split is never seen here). Pass a
    `state` from a checkpoint to resume at its epoch and step. The steps run the model's
    compiled twin where `runtime.compile` says so for this phase's planned work (decided at its
    first batch); hooks always see the original module, which shares the twin's parameters.
    """
    s = state or LoopState(model, optimizer, scheduler, epochs=epochs, steps_per_epoch=len(train))
    s.batches = train
    result = FitResult()
    t0 = time.perf_counter()
    log.info("%s: %d epochs × %d steps", name, epochs, len(train))
    log.info("%6s %10s %10s %10s %9s", "epoch", "loss", f"val_{task.metric}", "lr", "epoch_s")
    steps_left = (epochs - s.epoch) * len(train)
    choose = _Chooser(model, runtime, steps_left, name)
    for h in hooks:
        h.before_fit(s)
    try:
        while s.epoch < epochs and s.stop_reason is None:
            te = time.perf_counter()
            lr = s.lr  # what this epoch's first step uses (after a one-epoch cosine, s.lr is 0)
            loss_sum, n_steps = _train_epoch(
                model, task, train, optimizer, scheduler, runtime, hooks, s, name, choose
            )
            s.epoch += 1
            mean_loss = (loss_sum / max(1, n_steps)).item()  # sync: once per epoch
            if not math.isfinite(mean_loss):
                raise NonFiniteLossError(s.step, mean_loss)
            s.metrics = {"loss": mean_loss, "lr": lr}
            if val is not None:
                score = evaluate(task, model, val, runtime)[task.metric]
                s.metrics[f"val_{task.metric}"] = score
                if select_best and (s.best_val is None or score > s.best_val):
                    s.best_val, s.best_epoch = score, s.epoch
                    s.best_state = copy.deepcopy(model.state_dict())
            for h in hooks:
                h.after_epoch(s)
            s.metrics["epoch_s"] = time.perf_counter() - te
            s.history.append({"epoch": s.epoch, **s.metrics})
            _log_epoch(s, task, mean_loss, lr)
    finally:
        for h in hooks:
            h.after_fit(s)
    if s.best_state is not None and s.stop_reason is None:
        model.load_state_dict(s.best_state)
    result.history, result.best_val, result.best_epoch = s.history, s.best_val, s.best_epoch
    result.stop_reason = s.stop_reason or "epochs"
    if s.stop_reason:
        log.info("%s stopped: %s", name, s.stop_reason)
    result.steps, result.epochs_run = s.step, s.epoch
    result.wall_s = time.perf_counter() - t0
    result.compiled = (
        choose.net is not None and choose.net is not model and twin_of(model) is not None
    )
    count_phase(result.compiled)
    return result


class _Chooser:
    """Picks, at a phase's first batch, what its steps call: the model or its compiled twin.

    The planned work is steps × the first batch's input values (None when the batch holds no
    tensor), so one rule covers 8×8 digits and 32×32 CIFAR alike."""

    def __init__(self, model: nn.Module, runtime: Runtime, steps: int, name: str) -> None:
        self.model, self.runtime, self.steps, self.name = model, runtime, steps, name
        self.net: nn.Module | None = None

    def __call__(self, batch: object) -> nn.Module:
        if self.net is None:
            first = batch[0] if isinstance(batch, tuple | list) and batch else batch
            values = first.numel() * self.steps if isinstance(first, torch.Tensor) else None
            r = self.runtime
            self.net = forward_for(
                self.model, r.compile, r.device, values, r.cache_dir, type(self.model).__name__
            )
            if self.net is not self.model:
                log.info("%s: training compiled (compile=%s)", self.name, r.compile)
        elif self.net is not self.model and not self.net.active:
            self.net = self.model  # the twin gave up (it logged why): eager from here on
        return self.net


def _train_epoch(
    model: nn.Module,
    task: Task,
    train: TensorBatches,
    optimizer: Optimizer,
    scheduler: LRScheduler | None,
    runtime: Runtime,
    hooks: Sequence[Hook],
    s: LoopState,
    name: str,
    choose: _Chooser,
) -> tuple[torch.Tensor, int]:
    """One pass over `train` (or up to a hook's stop): the hot path, so no host sync here.

    Returns the summed loss, still on the device, and the number of steps taken.
    """
    model.train()
    loss_sum = torch.zeros((), device=runtime.device)
    n_steps = 0
    for batch in track_steps(train, len(train), f"{name} epoch {s.epoch + 1}"):
        net = choose(batch)
        if isinstance(net, CompiledModel) and not net.backward_compiled:
            loss = _first_compiled_step(model, net, task, batch, optimizer, runtime)
        else:
            loss = _forward_backward(net, task, batch, optimizer, runtime)
        s.loss = loss.detach()
        for h in hooks:
            h.after_backward(s)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        s.step += 1
        n_steps += 1
        loss_sum += s.loss
        for h in hooks:
            h.after_step(s)
        if s.stop_reason is not None:
            break
    return loss_sum, n_steps


def _forward_backward(
    net: nn.Module, task: Task, batch: object, optimizer: Optimizer, runtime: Runtime
) -> torch.Tensor:
    """One step's loss under the run's autocast, with fresh gradients from its backward."""
    with runtime.autocast():
        loss = task.loss(net, batch)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss


def _first_compiled_step(
    model: nn.Module,
    twin: CompiledModel,
    task: Task,
    batch: object,
    optimizer: Optimizer,
    runtime: Runtime,
) -> torch.Tensor:
    """The twin's first training step, whose backward compiles its graph lazily (outside the
    twin's own fallback): if that compile fails, the step is undone (buffers such as BatchNorm's
    running statistics, and the RNG) and taken eagerly, so the run goes on exactly as an eager
    one would."""
    buffers = [b.detach().clone() for b in model.buffers()]
    rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if runtime.device.type == "cuda" else None
    try:
        loss = _forward_backward(twin, task, batch, optimizer, runtime)
    except Exception as e:  # noqa: BLE001 - the compiled backward failed: eager from here on
        if twin.failed is None:
            twin.give_up(e)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers, strict=True):
                b.copy_(saved)
        torch.random.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        return _forward_backward(model, task, batch, optimizer, runtime)
    twin.backward_compiled = True
    return loss


def _log_epoch(s: LoopState, task: Task, mean_loss: float, lr: float) -> None:
    """The epoch's line of the table whose header `fit` logs."""
    log.info(
        "%6d %10.4f %10.4f %10.2e %9.2f",
        s.epoch,
        mean_loss,
        s.metrics.get(f"val_{task.metric}", float("nan")),
        lr,
        s.metrics["epoch_s"],
    )
