"""The method contract: three kinds of pruner, each declaring what it needs.

- `OneShotMethod` scores one layer at a time (`score(view)`); the harness reduces the scores over
  each channel group, ranks, and cuts to the MAC target (harness/structure/allocate.py).
- `TrainTimeMethod` is a one-shot scorer that first trains with its own hooks (network slimming's
  sparsity regulariser, SFP's re-masking) for `epochs` epochs from the baseline.
- `SearchMethod` owns its search (DHP): it gets a `PruneContext` and returns a compact model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from harness.errors import IncompatibleMethodError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from harness.runtime.device import Runtime
    from harness.structure import AllocationPolicy, CostModel, LayerView, Plan, Structure
    from harness.task import DataSplits, Task
    from harness.train import Hook, Trainer

__all__ = [
    "Method",
    "Needs",
    "OneShotMethod",
    "PruneContext",
    "SearchMethod",
    "SearchResult",
    "TrainTimeMethod",
    "within_needs",
]


@dataclass(frozen=True)
class Needs:
    """What a method requires; the harness refuses impossible combinations before any work."""

    data: bool = False  # reads training batches, ctx.data (Taylor, DHP); else ctx.data raises
    grads: bool = False  # uses loss gradients; only then does `LayerView.grad` carry them
    training: bool = False  # trains (ctx.fit, a TrainTimeMethod's hooks); else ctx.fit raises
    batchnorm: bool = False  # scores BatchNorm γ (network slimming)
    pretrained: bool = True  # starts from the trained baseline (DHP searches from scratch)
    tasks: tuple[str, ...] | None = None  # None: every task


@dataclass
class PruneContext:
    """Everything shared a method may use; built by the pipeline for one run."""

    model: nn.Module
    structure: Structure
    cost: CostModel  # the cost model the run allocates against (`policy.cost`)
    task: Task
    data: DataSplits
    runtime: Runtime
    target: float
    seed: int
    # the run's one training entry (harness/train/entry.py): `fit(model, epochs=..., optim=...,
    # hooks=..., params=..., batches=..., name=..., resume=...)`; each stage name gets its own
    # batch stream, so a method trains through it instead of building optimizers itself
    fit: Trainer
    # the run's allocation policy (normalisation, uniform/global, floors, rounding, cost model),
    # built once in the run's setup; every method and hook allocates through it
    policy: AllocationPolicy | None = None
    log_metrics: Callable[[dict[str, float], int | None], None] = lambda m, step=None: None
    # what a method may know of the run, as plain values: a method reads its constructor
    # arguments and these, never the run's config
    model_name: str | None = None  # the registered model (cfg.model.name)
    task_name: str | None = None  # the registered task (cfg.task.name)
    data_name: str | None = None  # the dataset (cfg.data.name)
    train: Mapping[str, Any] = field(default_factory=dict)  # the run's train section, plain
    finetune: Mapping[str, Any] = field(default_factory=dict)  # the finetune section, plain
    input_shape: tuple[int, ...] = ()  # the task's input shape for this data, batch included
    tags: Mapping[str, Any] = field(default_factory=dict)  # the run's tracking tags
    # study_artifacts(method, trial): the artifacts folder of that trial of the same-seed study
    # of `method` on this run's task, data, model and storage (a control's source)
    study_artifacts: Callable[[str, int], Path] | None = None
    # where the run corrects plans by measurement (target_kind=latency): land(plan_at, t) returns
    # the plan `LatencyTarget.land` settles on, `plan_at(t')` being the method's plan at the cost
    # model's ratio t' (a search method that plans by itself: DHP); None: plans are not measured
    land: Callable[[Callable[[float], Plan], float], Plan] | None = None


@dataclass
class SearchResult:
    """A search method's output: the compact model, its plan and the cost of the search."""

    model: nn.Module
    plan: Plan
    stats: dict[str, float] = field(default_factory=dict)  # wall_s, iterations, epochs, …


class Method(ABC):  # noqa: B024 - abstract in intent: use one of the three kinds below
    """Base of every pruning method. Constructor arguments are the method's own hyperparameters."""

    needs: ClassVar[Needs] = Needs()
    #: allocation when the config leaves `prune.allocation` null ("uniform" or "global")
    default_allocation: ClassVar[str] = "uniform"
    #: global ranking on group-normalised scores (True) or on raw scores (one global threshold,
    #: as network slimming's |γ|); used when `prune.normalize` is null
    normalize_scores: ClassVar[bool] = True
    #: the pipeline fine-tunes the method's compact model (False: a control that trains its own
    #: model from scratch and needs no fine-tuning, harness/run/budget.py)
    finetunes: ClassVar[bool] = True

    def phase_epochs(self, *, task: str | None, train: Mapping[str, Any]) -> float | None:
        """Epochs of training this method plans before the harness fine-tunes (its search,
        sparsity or soft-pruning epochs); `train` is the run's train section. Equal budgets
        (harness/run/budget.py) give one-shot methods the difference as fine-tuning. None: unknown
        (it then gets what its measured search, `SearchResult.stats["epochs"]`, leaves of the
        total). Default: 0, no training of its own; a method that trains inside `prepare` must
        say so here and report the epochs, or equal budgets undercount it."""
        return 0.0

    @classmethod
    def resolve_config(
        cls, kwargs: dict[str, Any], *, model: str | None, task: str | None
    ) -> dict[str, Any]:
        """Turn the method's config section into constructor arguments for one (model, task):
        the place for per-model / per-task defaults, so the constructor gets plain values.
        Explicitly set values must win. Default: unchanged."""
        return kwargs

    def check(self, model: nn.Module, task_name: str) -> None:
        """Raise IncompatibleMethodError when this method cannot run on `model` for `task_name`."""
        name = getattr(self, "registry_name", type(self).__name__)
        if self.needs.tasks is not None and task_name not in self.needs.tasks:
            raise IncompatibleMethodError(
                f"method '{name}' does not support task '{task_name}'; "
                f"it supports: {', '.join(self.needs.tasks)}"
            )
        if self.needs.batchnorm and not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ):
            raise IncompatibleMethodError(
                f"method '{name}' scores BatchNorm scales, but model {type(model).__name__} "
                "has no BatchNorm layer; pick a method that scores weights (e.g. l1, fpgm, taylor)"
            )

    def check_structure(self, model: nn.Module, structure: Structure) -> None:  # noqa: B027
        """Raise IncompatibleMethodError when this method can prune none of `model`'s channel
        groups. Called once the groups are derived, before any training. Default: any group."""


class _Undeclared:
    """Stands in for a `PruneContext` field the method's `needs` does not declare; use raises."""

    def __init__(self, method: str, field: str, need: str) -> None:
        self.message = (
            f"method '{method}' uses ctx.{field}, but its `needs` does not declare {need}=True; "
            f"declare it (needs = Needs({need}=True, ...)) or do not use ctx.{field}"
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy/pickle probes: behave like a plain object
            raise AttributeError(name)
        raise IncompatibleMethodError(self.message)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise IncompatibleMethodError(self.message)


def within_needs(ctx: PruneContext, method: Method) -> PruneContext:
    """`ctx` as `method` may see it: the training batches only with `needs.data`, the training
    loop only with `needs.training` (what it does not declare raises IncompatibleMethodError)."""
    name = getattr(method, "registry_name", type(method).__name__)
    undeclared: dict[str, Any] = {}
    if not method.needs.data:
        undeclared["data"] = _Undeclared(name, "data", "data")
    if not method.needs.training:
        undeclared["fit"] = _Undeclared(name, "fit", "training")
    return replace(ctx, **undeclared) if undeclared else ctx


class OneShotMethod(Method):
    """Scores channels of a (trained) model; the harness allocates and removes."""

    def prepare(self, ctx: PruneContext) -> None:
        """Called once per pruning step, before any `score` (e.g. Taylor gathers gradients)."""

    @abstractmethod
    def score(self, view: LayerView) -> Tensor | None:
        """[n] importance of the view's output channels (higher = keep), or None to abstain."""


class TrainTimeMethod(OneShotMethod):
    """A scorer that first trains the baseline further with its own hooks."""

    epochs: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.needs.training:
            raise TypeError(f"{cls.__name__} trains, so its `needs` must declare training=True")

    def phase_epochs(self, *, task: str | None, train: Mapping[str, Any]) -> float | None:
        """Its own training phase: `epochs` epochs before the cut."""
        return float(self.epochs)

    @abstractmethod
    def hooks(self, ctx: PruneContext) -> list[Hook]:
        """Hooks for the method's own training phase (run for `self.epochs` epochs)."""

    def train_optim(self, ctx: PruneContext) -> Mapping[str, Any]:
        """The optimiser section of that phase: by default fine-tuning's (`ctx.finetune`); a
        method whose paper trains from scratch may return `ctx.train`."""
        return ctx.finetune

    def train_stats(self) -> dict[str, float]:
        """Numbers of that phase for the run record (as `search_<key>`), e.g. slimming's Σ|γ|
        shrink; read after training. Default: none."""
        return {}


class SearchMethod(Method):
    """A method that owns its search and returns a compact model (DHP)."""

    #: the search stops on `ctx.cost` at `ctx.target` whatever the cost model, so it takes a
    #: latency target (`target_kind=latency`: `ctx.cost` is the run's latency table)
    stops_on_cost: ClassVar[bool] = False
    #: it chooses its widths and keeps them multiples of `prune.round_to` (`ctx.policy.round_to`);
    #: False: the run refuses round_to > 1 (it takes another run's widths as they are)
    rounds: ClassVar[bool] = False

    def phase_epochs(self, *, task: str | None, train: Mapping[str, Any]) -> float | None:
        """A search's planned epochs are its own business: None unless the method says."""
        return None

    @abstractmethod
    def search(self, ctx: PruneContext) -> SearchResult:
        """Search under `ctx.target`; the pipeline then fine-tunes the returned model."""
