"""Training-loop hooks: the one way methods change training (regularisers, re-masking, search)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

__all__ = ["Hook", "LoopState"]


@dataclass
class LoopState:
    """What a hook sees. Hooks read and write it; they never keep a reference to the trainer."""

    model: nn.Module
    optimizer: Optimizer
    scheduler: LRScheduler | None
    epochs: int
    steps_per_epoch: int
    epoch: int = 0
    step: int = 0  # optimizer steps taken so far (after_step sees the count including this one)
    loss: Tensor | None = None  # last step's loss, on the device: do not .item() it per step
    metrics: dict[str, float] = field(default_factory=dict)  # last epoch's summary
    stop_reason: str | None = None  # set by a hook to end training after the current step
    # the fit's own bookkeeping, kept here so a snapshot of the state resumes the fit exactly
    # (harness/train/resume.py): the batch stream, the history and the best-validation state
    batches: Any = None
    history: list[dict[str, float]] = field(default_factory=list)
    best_val: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, Tensor] | None = None

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


class Hook:
    """Override any subset; all are no-ops.

    Order per step: forward, backward, `after_backward`, optimizer.step, scheduler.step,
    `after_step`. `after_epoch` runs after the epoch's validation; `after_fit` runs in `finally`.
    To end training set `s.stop_reason`; the loop logs and records it.
    """

    def before_fit(self, s: LoopState) -> None: ...

    def after_backward(self, s: LoopState) -> None: ...

    def after_step(self, s: LoopState) -> None: ...

    def after_epoch(self, s: LoopState) -> None: ...

    def after_fit(self, s: LoopState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
