"""One exception tree for every user-facing failure, so callers can catch `PruneBenchError`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataNotFoundError",
    "ImpossibleTargetError",
    "IncompatibleMethodError",
    "NonFiniteLossError",
    "PruneBenchError",
    "RunStopped",
    "StoreError",
    "UnknownNameError",
    "UnsupportedModelError",
    "load_problem",
]


class PruneBenchError(Exception):
    """Root of every error PruneBench raises on purpose."""


class ConfigError(PruneBenchError, ValueError):
    """A configuration value is out of range or inconsistent."""


class UnknownNameError(PruneBenchError, KeyError):
    """A registry lookup failed; the message lists the known names and the nearest match."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        listed = ", ".join(known) or "none (load the plugins first: load_configured(cfg))"
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} '{name}'{hint}; known: {listed}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class ImpossibleTargetError(PruneBenchError, ValueError):
    """The MAC target cannot be met (outside (0, 1], or below what the floors allow)."""


class DataNotFoundError(PruneBenchError, FileNotFoundError):
    """A dataset is missing or malformed; the message names the path and the expected layout."""


class IncompatibleMethodError(PruneBenchError, ValueError):
    """A method cannot run on this task or model (e.g. slimming without BatchNorm)."""


class UnsupportedModelError(IncompatibleMethodError):
    """The structure engine cannot derive the channel groups of a model (it names the construct);
    raised before any training."""


class CheckpointError(PruneBenchError, RuntimeError):
    """A checkpoint is corrupt or does not match the model it is loaded into."""


class NonFiniteLossError(PruneBenchError, FloatingPointError):
    """Training produced a NaN or inf loss."""

    def __init__(self, step: int, loss: float) -> None:
        self.step, self.loss = step, loss
        super().__init__(f"non-finite loss {loss} at step {step}; lower the learning rate")


class SearchDivergedError(PruneBenchError, FloatingPointError):
    """A pruning search's own parameters (e.g. DHP's latent vectors) became NaN or inf."""


class RunStopped(PruneBenchError):
    """A run was ended on purpose before it finished (e.g. an Optuna trial found infeasible)."""


class StoreError(PruneBenchError, OSError):
    """A store (MLflow tracking, artifacts) could not record what a run produced."""


def load_problem(e: Exception) -> str:
    """Why torch could not load a weights file, in one line and without torch's advice to load
    it unsafely (`weights_only=False` would run whatever code the file carries)."""
    text = " ".join(str(e).split())
    if "Weights only load failed" in text or "weights_only" in text:
        return (
            "it holds pickled Python objects besides tensors, which PruneBench never unpickles "
            "(that could run code); save a plain state dict: torch.save(model.state_dict(), f) "
            "or use .safetensors"
        )
    return f"{type(e).__name__}: {text[:300]}"
