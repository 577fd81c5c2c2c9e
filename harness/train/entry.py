"""The one training entry of a run: every stage that trains (the baseline, a train-time method's
phase, fine-tuning between and after pruning, DHP's search, a control's from-scratch training)
goes through `Trainer`, so each gets the same loop, optimizer family and schedule rules, and its
own batch stream seeded by (run seed, stage name): what one stage draws never shifts another's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from harness.errors import CheckpointError
from harness.runtime.seeds import derive_seed
from harness.train.hooks import Hook, LoopState
from harness.train.loop import FitResult, fit
from harness.train.optim import build_optimizer, build_scheduler

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

    from harness.data import TensorBatches
    from harness.runtime.device import Runtime
    from harness.task import DataSplits, Task

__all__ = ["FitCheckpoint", "Trainer"]


@dataclass(frozen=True)
class FitCheckpoint:
    """Where an interrupted fit picks up, as written at an epoch end: the weights, the optimizer's
    and the schedule's state, the loop's epoch and step and the batch stream's generator.

    Tensors and plain values only, so a file holding `to_dict()` loads with
    `torch.load(weights_only=True)` (unlike harness/train/resume.py's snapshot, which also
    carries the global RNGs and best-validation weights a successive-halving rung needs).
    """

    model: Mapping[str, Tensor]
    optimizer: Mapping[str, Any]
    scheduler: Mapping[str, Any] | None
    epoch: int
    step: int
    batches: Tensor | None = None  # the stream's generator state

    @classmethod
    def of(cls, s: LoopState) -> FitCheckpoint:
        """The checkpoint of a running fit (what a hook writes at `after_epoch`)."""
        return cls(
            model=s.model.state_dict(),
            optimizer=s.optimizer.state_dict(),
            scheduler=s.scheduler.state_dict() if s.scheduler is not None else None,
            epoch=s.epoch,
            step=s.step,
            batches=s.batches.generator.get_state() if s.batches is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "loop": {"epoch": self.epoch, "step": self.step},
            "batches": self.batches,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> FitCheckpoint:
        try:
            loop = state["loop"]
            return cls(
                model=state["model"],
                optimizer=state["optimizer"],
                scheduler=state["scheduler"],
                epoch=int(loop["epoch"]),
                step=int(loop["step"]),
                batches=state["batches"],
            )
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"a fit checkpoint lacks {e}: not written by this version") from e

    def restore(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        scheduler: LRScheduler | None,
        batches: TensorBatches,
        epochs: int,
    ) -> LoopState:
        """Put the checkpoint into a fresh fit's model, optimizer, schedule and stream (built
        the same way) and return the loop state to resume at."""
        try:
            model.load_state_dict(self.model)
            optimizer.load_state_dict(self.optimizer)
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"a fit checkpoint does not fit this model/optimizer: {e}") from e
        if scheduler is not None and self.scheduler is not None:
            scheduler.load_state_dict(self.scheduler)
        if self.batches is not None:
            batches.generator.set_state(self.batches)
        return LoopState(
            model,
            optimizer,
            scheduler,
            epochs=epochs,
            steps_per_epoch=len(batches),
            epoch=self.epoch,
            step=self.step,
        )


@dataclass(frozen=True)
class Trainer:
    """The run's training entry (`ctx.fit` for a method): call it once per stage."""

    task: Task
    data: DataSplits
    runtime: Runtime
    seed: int

    def __call__(
        self,
        model: nn.Module,
        *,
        epochs: int,
        optim: Mapping[str, Any],
        params: Iterable[nn.Parameter] | Iterable[dict[str, Any]] | None = None,
        batches: TensorBatches | None = None,
        hooks: Sequence[Hook] = (),
        val: bool = True,
        select_best: bool = False,
        name: str = "train",
        resume: FitCheckpoint | None = None,
    ) -> FitResult:
        """Train `model` in place for `epochs` epochs as stage `name`.

        `optim`: optimizer and schedule settings (a train/finetune section: optimizer, lr,
        weight_decay, schedule, ...). `params`: what to optimise, parameters or param groups
        (default: the model's). `batches`: the stage's stream (default: the run's training
        batches), forked with `derive_seed(seed, name)` either way. `val`: score the validation
        split each epoch (`select_best`: restore the best epoch's weights). `resume`: continue
        from a `FitCheckpoint` of the same stage.
        """
        optim = optim if isinstance(optim, DictConfig) else OmegaConf.create(dict(optim))
        source = self.data.train if batches is None else batches
        stream = source.fork(derive_seed(self.seed, name))
        optimizer = build_optimizer(model.parameters() if params is None else params, optim)
        scheduler = build_scheduler(optimizer, optim, epochs=epochs, steps_per_epoch=len(stream))
        state = None
        if resume is not None:
            state = resume.restore(model, optimizer, scheduler, stream, epochs)
        return fit(
            model,
            self.task,
            stream,
            epochs=epochs,
            optimizer=optimizer,
            scheduler=scheduler,
            runtime=self.runtime,
            hooks=hooks,
            val=self.data.val if val else None,
            select_best=select_best,
            name=name,
            state=state,
        )
