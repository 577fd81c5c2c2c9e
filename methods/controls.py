"""Controls: what a pruning result must beat before it says anything about pruning.

- `scratch_e` / `scratch_b` (Liu et al., "Rethinking the Value of Network Pruning", ICLR 2019):
  the architecture another run produced, re-initialised and trained from scratch with the run's
  `train` recipe, for the baseline's `train.epochs` (Scratch-E) or for the same compute
  (Scratch-B: `train.epochs` × unpruned MACs / pruned MACs, measured).
- `uniform` ("ThinResNet", arXiv 2309.12854): the network width-scaled uniformly to the MAC target
  (every prunable group keeps the same fraction, `prune.floor`/`min_channels` respected) and
  trained from scratch, Scratch-E or -B (`budget`).
- `random_widths`: the baseline cut to another run's per-group kept counts with random channels,
  then fine-tuned like any method: separates "better widths" from "better channels".

`source` names the run whose architecture a control reuses: a run folder (or its plan.json), or a
method name; then, inside a study, the trial with this trial's number in the same-seed study of
that method (same task, data, model, outputs and storage), else `source_trial` of that study. A
study of a control with a method source is named `<control>@<method>` (e.g. `scratch_b@l1`), so
`prunebench study method=scratch_b method.source=l1` mirrors l1's study trial by trial, and
`compare.controls` pairs each method's pick with the control of the same architecture.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from harness.errors import ConfigError, DataNotFoundError
from harness.method import Needs, SearchMethod, SearchResult
from harness.registry import METHODS
from harness.run.measure import count_macs
from harness.runtime.seeds import derive_seed
from harness.structure import Plan, apply_plan, resize_to

if TYPE_CHECKING:
    from collections.abc import Mapping

    from harness.method import PruneContext

log = logging.getLogger(__name__)

BUDGETS = ("e", "b")
_METHOD_NAME = re.compile(r"[a-z0-9_]+")


def _fan_ins(model: nn.Module) -> dict[str, int]:
    """Input elements per output unit of every conv/linear (what a fan-in init scales by)."""
    fans = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear) and m.weight.dim() > 1:
            w = m.weight
            fans[name] = (
                int(w[0].numel())
                if not isinstance(m, nn.ConvTranspose2d)
                else int(w.shape[0] * w[0, 0].numel() // max(1, m.groups))
            )
    return fans


@torch.no_grad()
def rescale_init(model: nn.Module, before: Mapping[str, int]) -> None:
    """A freshly initialised model cut narrower keeps the weight scale of the wider one; rescale
    each layer whose fan-in shrank by √(old / new), the scale a fan-in initialisation (PyTorch's
    default, Kaiming) would have given the narrow layer. BatchNorm layers keep their init."""
    after = _fan_ins(model)
    modules = dict(model.named_modules())
    for name, old in before.items():
        new = after.get(name)
        if new and new != old:
            modules[name].weight.mul_(math.sqrt(old / new))


def _check_budget(budget: str) -> str:
    if budget not in BUDGETS:
        raise ConfigError(
            f"method.budget={budget!r}; use e (Scratch-E: the baseline's epochs) or b (Scratch-B: "
            "the same compute as the baseline's training)"
        )
    return budget


def scratch_epochs(
    ctx: PruneContext, budget: str, pruned: nn.Module, base_macs: int
) -> tuple[int, float]:
    """Epochs of from-scratch training: `train.epochs` (E) or that × base / pruned MACs (B),
    rounded; and the compute factor."""
    epochs = int(ctx.train.get("epochs") or 0)
    if epochs < 1:
        raise ConfigError("a from-scratch control needs train.epochs ≥ 1 (its Scratch-E budget)")
    macs = count_macs(pruned, ctx.input_shape).macs
    factor = base_macs / macs if budget == "b" and macs > 0 else 1.0
    return max(1, round(epochs * factor)), factor


def train_from_scratch(
    ctx: PruneContext, model: nn.Module, plan: Plan, budget: str, base_macs: int, t0: float
) -> SearchResult:
    """Train the (re-initialised) compact `model` with the run's `train` recipe, best
    validation state kept, for its Scratch-E/B epochs; the stats the record carries."""
    model = ctx.runtime.prepare(model)
    epochs, factor = scratch_epochs(ctx, budget, model, base_macs)
    log.info("%s: training the compact model from scratch for %d epochs (×%.2f compute)",
             f"scratch-{budget}", epochs, factor)  # fmt: skip
    result = ctx.fit(model, epochs=epochs, optim=ctx.train, select_best=True, name="scratch")
    stats = {
        "epochs": float(result.epochs_run),
        "iterations": float(result.steps),
        "wall_s": time.perf_counter() - t0,
        "scratch_factor": factor,
    }
    return SearchResult(model=model, plan=plan, stats=stats)


def _source_study_run(ctx: PruneContext, method: str, trial: int | None) -> Path:
    """The artifacts folder of trial `trial` (default: this trial's number) of the same-seed
    study of `method` on this run's task, data, model and storage."""
    number = trial if trial is not None else ctx.tags.get("optuna_trial")
    if number is None:
        raise ConfigError(
            f"method.source={method} names a study; outside a study set method.source_trial "
            "(the trial whose architecture to reuse) or method.source=<run folder>"
        )
    return ctx.study_artifacts(method, int(number))


def source_plan(ctx: PruneContext, source: str | None, trial: int | None) -> dict[str, Any]:
    """The saved plan.json (plan, channels, meta) of the run `source` names; checked to be a
    run of this model."""
    if not source:
        raise ConfigError(
            "this control needs method.source: a run folder (outputs/runs/<id>) or the method "
            "whose study it mirrors (e.g. method.source=l1)"
        )
    path = Path(source)
    if path.is_dir():
        path = path / "plan.json"
    if not path.exists():
        if not _METHOD_NAME.fullmatch(source):
            raise DataNotFoundError(f"method.source={source}: no plan.json there")
        path = _source_study_run(ctx, source, trial) / "plan.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataNotFoundError(f"method.source: cannot read {path}: {e}") from e
    model = doc.get("meta", {}).get("model")
    if model is not None and ctx.model_name is not None and model != ctx.model_name:
        raise ConfigError(
            f"method.source {path} is a run of model '{model}', not '{ctx.model_name}'"
        )
    doc["path"] = str(path)
    return doc


class _Control(SearchMethod):
    """A registered control: not a pruning method, shown apart from methods by `compare`."""

    control: ClassVar[bool] = True

    def __init__(self, *, source: str | None = None, source_trial: int | None = None) -> None:
        self.source = None if source is None else str(source)
        self.source_trial = None if source_trial is None else int(source_trial)

    def _stats(self, doc: Mapping[str, Any]) -> dict[str, float]:
        """The source trial (its number in the source study) for `compare`'s pairing."""
        tags = (doc.get("meta", {}).get("config", {}).get("tracking", {}) or {}).get("tags", {})
        number = (tags or {}).get("optuna_trial")
        return {} if number is None else {"source_trial": float(number)}


class _FromScratch(_Control):
    needs = Needs(training=True, pretrained=False)
    finetunes = False  # it trains its own model from scratch; no fine-tuning after
    budget: str = "b"

    def phase_epochs(self, *, task: str | None, train: Mapping[str, Any]) -> float | None:
        return None  # its own Scratch-E/B budget, outside budget.mode


@METHODS.register("scratch_e", control=True)
class ScratchE(_FromScratch):
    """The source run's architecture, re-initialised, trained from scratch for `train.epochs`."""

    budget = "e"

    def search(self, ctx: PruneContext) -> SearchResult:
        t0 = time.perf_counter()
        doc = source_plan(ctx, self.source, self.source_trial)
        model = ctx.model  # freshly built with the run seed (needs.pretrained is False)
        base_macs = count_macs(model, ctx.input_shape).macs
        fans = _fan_ins(model)
        resize_to(model, doc["channels"])
        rescale_init(model, fans)
        plan = Plan({g: list(k) for g, k in (doc.get("plan") or {}).items()})
        result = train_from_scratch(ctx, model, plan, self.budget, base_macs, t0)
        result.stats.update(self._stats(doc))
        return result


@METHODS.register("scratch_b", control=True)
class ScratchB(ScratchE):
    """Scratch-E with the baseline's compute: epochs × unpruned / pruned MACs."""

    budget = "b"


@METHODS.register("uniform", control=True)
class Uniform(_FromScratch):
    """Every prunable group kept at the same fraction, to the MAC target, trained from scratch."""

    rounds = True  # allocates through the run's policy, prune.round_to included

    def __init__(self, *, budget: str = "b") -> None:
        super().__init__()
        self.budget = _check_budget(budget)

    def search(self, ctx: PruneContext) -> SearchResult:
        t0 = time.perf_counter()
        model = ctx.model
        base_macs = count_macs(model, ctx.input_shape).macs
        scores = {g.name: torch.ones(g.size) for g in ctx.structure.prunable}
        # the run's policy (floors, cost model), every group at the same kept fraction
        policy = replace(ctx.policy, allocation="uniform", normalize=True)
        plan = policy.allocate(scores, ctx.target)
        fans = _fan_ins(model)
        apply_plan(model, ctx.structure, plan)
        rescale_init(model, fans)
        return train_from_scratch(ctx, model, plan, self.budget, base_macs, t0)


@METHODS.register("random_widths", control=True)
class RandomWidths(_Control):
    """The source's kept count per group, random channels (seeded), from the baseline."""

    needs = Needs()

    def phase_epochs(self, *, task: str | None, train: Mapping[str, Any]) -> float | None:
        return 0.0  # no training of its own: fine-tuned like a one-shot method

    def search(self, ctx: PruneContext) -> SearchResult:
        t0 = time.perf_counter()
        doc = source_plan(ctx, self.source, self.source_trial)
        steps = (doc.get("meta", {}).get("config", {}).get("prune", {}) or {}).get("steps", 1)
        if int(steps or 1) > 1:
            raise ConfigError(
                f"random_widths needs a single-step source plan; {doc['path']} was pruned in "
                f"{steps} steps (its plan indexes the last step's channels)"
            )
        groups = ctx.structure.groups
        kept: dict[str, list[int]] = {}
        for name, units in (doc.get("plan") or {}).items():
            if name not in groups or len(units) > groups[name].size:
                raise ConfigError(
                    f"the source plan {doc['path']} names group '{name}' with {len(units)} kept "
                    "units, which this model's structure does not have"
                )
            g = torch.Generator().manual_seed(derive_seed(int(ctx.seed), f"random_widths/{name}"))
            pick = torch.randperm(groups[name].size, generator=g)[: len(units)]
            kept[name] = sorted(int(i) for i in pick)
        plan = Plan(kept)
        model = apply_plan(ctx.model, ctx.structure, plan)
        stats = {"wall_s": time.perf_counter() - t0, **self._stats(doc)}
        return SearchResult(model=model, plan=plan, stats=stats)
