"""Training budgets per trial: `budget.mode` equal (the default) or paper.

A method's trial trains in two parts: its own phase (a search, sparsity or soft-pruning epochs,
fine-tuning between progressive steps) and the fine-tuning after the cut. Under `paper` each
method keeps its own phase and every method gets `finetune.epochs` on top, so a method that
trains 5 epochs of its own sees 5 epochs more data than a one-shot method. Under `equal` every
trial trains the same total epochs (`budget.epochs`): the fine-tuning is what the method's phase
left of it, so one-shot methods get the difference as extra fine-tuning. The budget is counted
in epochs of the training split, i.e. in training images (`cost_train_images`); a search that
stops early (DHP at its target) leaves the rest to fine-tuning, so totals agree within half an
epoch (the fine-tuning is whole epochs).

What is equal is the training behind each pruned model, the baseline it starts from included.
Every method that starts from the shared baseline has the same `train.epochs` behind it, so for
them equal means equal `cost_train_images`. A method that searches from scratch instead
(`needs.pretrained` false: DHP) has no baseline behind it: its search counts against the
baseline's `train.epochs`, and only what it trains beyond them is its own phase (a 20-epoch
search against a 20-epoch baseline leaves it the whole fine-tuning total).

`budget.epochs: null` sets the total to `finetune.epochs` plus the longest own phase among the
methods that start from the baseline, of `budget.methods` (default: `compare.methods`) and this
run's, so every study of one comparison gets the same total without naming it. A from-scratch
search whose epochs beyond the baseline's exceed that total gets no fine-tuning (with a warning:
its paper schedule trains more than the others; `paper` mode keeps it). Controls that train from
scratch (`Method.finetunes` false) keep their own Scratch-E/B budget.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.method import Method

__all__ = ["BUDGET_MODES", "Budget", "plan_budget"]

log = logging.getLogger(__name__)

BUDGET_MODES = ("equal", "paper")


@dataclass(frozen=True)
class Budget:
    """One run's training budget: its mode, the total epochs per trial (equal mode) and the
    epochs the method's own phase is planned to train."""

    mode: str
    total_epochs: float | None  # equal: method phase + fine-tuning; None under paper
    phase_epochs: float  # planned own phase (search/sparsity/soft epochs, between-step epochs)
    finetune_epochs: int  # `finetune.epochs`: the paper-mode fine-tuning
    credit: float = 0.0  # a from-scratch search: the baseline epochs it stands in for

    def finetune_for(self, spent_epochs: float) -> int:
        """Fine-tuning epochs after a phase that trained `spent_epochs`: `finetune.epochs`
        under paper; under equal what is left of the total, rounded to whole epochs (never
        below 0)."""
        if self.total_epochs is None:
            return self.finetune_epochs
        left = self.total_epochs - (spent_epochs - self.credit)
        if left < -0.5:
            log.warning(
                "the method trained %.2f epochs of its own, more than budget.epochs=%g: "
                "no fine-tuning is left",
                spent_epochs,
                self.total_epochs,
            )
        return max(0, round(left))

    def record(self) -> dict[str, Any]:
        """What the run record says of its budget."""
        return {"budget_mode": self.mode, "budget_epochs": self.total_epochs}


def _between_epochs(cfg: DictConfig) -> float:
    """Epochs of fine-tuning between progressive pruning steps: part of the method's phase."""
    return float(cfg.prune.finetune_between) * (int(cfg.prune.steps) - 1)


def _credit(method: Method, cfg: DictConfig) -> float:
    """The baseline epochs a from-scratch method's training stands in for (0 when it starts
    from the baseline)."""
    return 0.0 if method.needs.pretrained else float(cfg.train.epochs)


def phase_epochs_of(method: Method, cfg: DictConfig) -> float | None:
    """The planned epochs `method` trains before the final fine-tuning beyond the baseline's
    (None: unknown)."""
    train = OmegaConf.to_container(cfg.train, resolve=True) if "train" in cfg else {}
    own = method.phase_epochs(task=str(cfg.task.name), train=train)
    if own is None:
        return None
    return float(own) + _between_epochs(cfg) - _credit(method, cfg)


def _method_cfg(name: str) -> DictConfig:
    """conf/method/<name>.yaml, or the bare name for a plugin method without one."""
    from harness.config import config_dir, parse_method_label

    label = parse_method_label(name)  # a control's label: its method's section
    path = config_dir() / "method" / f"{label['name']}.yaml"
    return OmegaConf.load(path) if path.exists() else OmegaConf.create(label)


def plan_budget(
    cfg: DictConfig, method: Method, build: Callable[[DictConfig], Method] | None = None
) -> Budget:
    """The run's budget from `cfg.budget`; a bad mode or a total the method's own phase cannot
    fit is refused here, before any training. `build` makes a method from its config section
    (the pipeline's `build_method` for this model and task): how the methods of
    `budget.methods` are asked for their phases."""
    section: Mapping[str, Any] = cfg.get("budget") or {}
    mode = str(section.get("mode") or "paper")
    if mode not in BUDGET_MODES:
        raise ConfigError(
            f"budget.mode={mode}; known: {', '.join(BUDGET_MODES)} (equal: every method trains "
            "the same epochs per trial; paper: each method's own schedule)"
        )
    finetune = int(cfg.finetune.epochs)
    own = phase_epochs_of(method, cfg) if method.finetunes else 0.0
    if not method.finetunes:  # a control trained from scratch: its own Scratch-E/B budget
        return Budget(f"scratch-{getattr(method, 'budget', 'own')}", None, 0.0, 0)
    if mode == "paper":
        return Budget(mode, None, own or 0.0, finetune)
    credit = _credit(method, cfg)
    total = section.get("epochs")
    if total is None:
        # a method that does not plan its epochs (Method.phase_epochs None) still gets what its
        # search leaves of the total, measured when it ends
        phases = [own] if method.needs.pretrained and own is not None else []
        for name in section.get("methods") or []:
            if str(name) == str(cfg.method.name):
                continue
            if build is None:
                raise ConfigError("budget.methods needs a method builder (harness/run/pipeline.py)")
            other = build(_method_cfg(str(name)))
            if other.finetunes and other.needs.pretrained:
                theirs = phase_epochs_of(other, cfg)
                if theirs is None:
                    log.warning(
                        "budget.methods: '%s' does not say how many epochs it trains before "
                        "fine-tuning; the equal total leaves it out (set budget.epochs)",
                        name,
                    )
                    continue
                phases.append(theirs)
        total = finetune + max(0.0, *phases)
    total = float(total)
    if own is None:
        return Budget(mode, total, math.nan, finetune, credit)
    if total < own and not method.needs.pretrained:
        log.warning(
            "budget.mode=equal: %s trains up to %g epochs beyond the baseline's %g, more than the "
            "%g-epoch total per trial: a search that runs that long leaves no fine-tuning "
            "(budget.mode=paper keeps its schedule)",
            cfg.method.name,
            own,
            credit,
            total,
        )
    elif total < own:
        raise ConfigError(
            f"budget.epochs={total:g} is less than the {own:g} epochs method "
            f"'{cfg.method.name}' trains before fine-tuning (beyond the baseline's); raise "
            "budget.epochs or shorten the method's phase"
        )
    return Budget(mode, total, own, finetune, credit)
