"""The commands that take a composed config, dispatched from one table: `prunebench <command>`
(cli/main.py) and each job of a Hydra sweep (cli/launch.py) both run `COMMANDS[command]`, so a
new command or a change of one is made here once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

__all__ = ["COMMANDS", "Command", "SWEEPABLE", "dispatch"]

#: compose(overrides) → the run's config (harness.config.compose)
Compose = Callable[[Sequence[str]], DictConfig]


@dataclass(frozen=True)
class Command:
    """One command: what it does with the composed config, whether Hydra may sweep it (-m),
    and whether it runs convolutions worth cuDNN's autotuner."""

    handler: Callable[[DictConfig, Sequence[str], Compose], dict[str, Any]]
    sweepable: bool = False
    trains: bool = False  # sets torch.backends.cudnn.benchmark


def _run(cfg: DictConfig, overrides: Sequence[str], compose: Compose) -> dict[str, Any]:
    from harness.run.pipeline import run

    return run(cfg)


def _measure(cfg: DictConfig, overrides: Sequence[str], compose: Compose) -> dict[str, Any]:
    from harness.run.pipeline import measure

    return measure(cfg)


def _study(cfg: DictConfig, overrides: Sequence[str], compose: Compose) -> dict[str, Any]:
    from harness.study import run_study

    return run_study(cfg)


def _compare(cfg: DictConfig, overrides: Sequence[str], compose: Compose) -> dict[str, Any]:
    from harness.report.compare import run_compare

    if cfg.compare.get("sweep"):
        from harness.cli.sweeps import compare_sweep

        return compare_sweep(cfg, overrides, compose)
    return run_compare(cfg)


def _demo(cfg: DictConfig, overrides: Sequence[str], compose: Compose) -> dict[str, Any]:
    from harness.cli.demo import run_demo

    return run_demo(overrides)


COMMANDS: dict[str, Command] = {
    "run": Command(_run, sweepable=True, trains=True),
    "measure": Command(_measure, sweepable=True),
    "study": Command(_study, sweepable=True, trains=True),
    "compare": Command(_compare),
    "demo": Command(_demo),
}
#: the commands a Hydra sweep (-m) may run, one job per point
SWEEPABLE = tuple(name for name, c in COMMANDS.items() if c.sweepable)


def dispatch(
    command: str, cfg: DictConfig, overrides: Sequence[str] = (), compose: Compose | None = None
) -> dict[str, Any]:
    """Run `command` on `cfg` (a known name: callers check `COMMANDS` first)."""
    spec = COMMANDS[command]
    if spec.trains:
        import torch

        torch.backends.cudnn.benchmark = True
    return spec.handler(cfg, overrides, compose)
