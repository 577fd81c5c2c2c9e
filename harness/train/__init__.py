"""Training: one loop with hooks, the run's training entry, optimizer/schedule builders."""

from harness.train.entry import FitCheckpoint, Trainer
from harness.train.hooks import Hook, LoopState
from harness.train.loop import FitResult, evaluate, fit
from harness.train.optim import build_optimizer, build_scheduler

__all__ = [
    "FitCheckpoint",
    "FitResult",
    "Hook",
    "LoopState",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "fit",
]
