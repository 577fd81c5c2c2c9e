"""Training: one loop with hooks, plus optimizer/schedule builders."""

from harness.train.hooks import Hook, LoopState
from harness.train.loop import FitResult, evaluate, fit
from harness.train.optim import build_optimizer, build_scheduler

__all__ = [
    "FitResult",
    "Hook",
    "LoopState",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "fit",
]
