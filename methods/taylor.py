"""Taylor importance (Molchanov et al., "Importance Estimation for Neural Network Pruning",
CVPR 2019; authors' code NVlabs/Taylor_pruning).

The first-order Taylor estimate of the loss change from removing a unit, squared, averaged over
`batches` training minibatches (train mode, as the paper's training-time estimate), the smallest
removed. Variants (`variant`):

- `auto` (default): the paper's best criterion, "gate after BN" (Table 2; the authors' method 22,
  used on all their ResNets): a channel's score is (∂L/∂gate)² for a gate fixed at 1 after its
  BatchNorm, which equals (γ_j ∂L/∂γ_j + β_j ∂L/∂β_j)² (the BN output is γ·x̂ + β). Conv/linear
  layers whose output goes through a BatchNorm (they share a channel group with one) abstain; the
  others score Σ_{s ∈ W_j} (g_s·w_s)², the per-weight estimate summed over the filter (Eq. 4; the
  authors' method 0, "Taylor_weight").
- `bn`: the BN gate only; groups without a BatchNorm are never pruned.
- `weight_sq`: Σ (g·w)² per filter on every conv/linear layer (method 0 everywhere).
- `weight`: (Σ_{s ∈ W_j} g_s·w_s)² per filter (Eq. 8 with S = the filter). Refused on a conv or
  linear layer feeding a BatchNorm: in train mode the loss does not change when such a filter is
  rescaled, so Σ g·w is 0 up to rounding and the ranking is noise (fp32 vs fp64 disagree).

Ranking: one global threshold on the raw scores, as the authors' code (`l2_normalization_per_layer`
false, all layers' units in one list): `default_allocation = "global"`, `normalize_scores = False`.
In a net where only some groups have a BatchNorm, `auto` puts gate and per-weight scores in one
list; set `prune.normalize=true` there to rank each group's scores relative to its mean.

Schedules (`schedule`):
- `oneshot` (default, CPU-sized): the score is gathered once from `batches` minibatches and the
  harness cuts to the target. Remaining difference: the authors prune iteratively during
  fine-tuning (100 neurons every 30 minibatches, importance averaged with momentum 0.9).
- `iterative` (the paper's): `epochs` of training at the fine-tuning optimiser; the squared
  estimate is averaged over every `frequency` minibatches, then averaged across pruning iterations
  with `momentum` (the authors' `pruning_momentum`), and after each window the lowest units of the
  whole network are removed — gated to zero (BatchNorm γ and β, or the filter rows where there is
  no BatchNorm), kept at zero while training continues — until the MAC ratio reaches
  target^(i/n) at iteration i of n = ⌊steps / frequency⌋. The final cut removes exactly the gated
  units (their averaged score is 0).

The BatchNorm running statistics are restored after one-shot scoring, so it leaves the model's
weights and buffers unchanged, grads cleared.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from harness.errors import ConfigError, IncompatibleMethodError
from harness.method import Needs, TrainTimeMethod
from harness.registry import METHODS
from harness.structure import score_groups
from harness.structure.scoring import out_first
from harness.train import Hook

if TYPE_CHECKING:
    from harness.method import PruneContext
    from harness.structure import AllocationPolicy, LayerView, Structure
    from harness.train import LoopState

log = logging.getLogger(__name__)

_VARIANTS = ("auto", "bn", "weight_sq", "weight")
_SCHEDULES = ("oneshot", "iterative")
_WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def behind_batchnorm(model: nn.Module, structure: Structure | None) -> list[str]:
    """Conv/linear producers that share a channel group with a BatchNorm producer: their output
    channels are normalised by it, so their per-filter Σ g·w carries no signal in train mode."""
    if structure is None:
        return []
    modules = dict(model.named_modules())
    out: dict[str, None] = {}
    for g in structure.groups.values():
        names = [s.module for s in g.producers]
        if any(isinstance(modules.get(n), _BN) for n in names):
            out.update((n, None) for n in names if isinstance(modules.get(n), _WEIGHTED))
    return list(out)


def _contribution(m: nn.Module, rule: str) -> Tensor | None:
    """[C_out] this minibatch's per-unit estimate, squared: (Σ g·w)² ("weight"), Σ (g·w)²
    ("weight_sq") or (γ·∂γ + β·∂β)² ("gate", the gate after a BatchNorm)."""
    if rule in ("weight", "weight_sq"):
        w = m.weight
        if w.grad is None:
            return None
        gw = out_first(m, w.detach() * w.grad).flatten(1).float()
        return gw.sum(dim=1).square() if rule == "weight" else gw.square().sum(dim=1)
    total = None
    for p in (m.weight, m.bias):
        if p is not None and p.grad is not None:
            c = (p.detach() * p.grad).float()
            total = c if total is None else total + c
    return None if total is None else total.square()


def _score_from(importance: dict[str, Tensor]) -> Callable[[LayerView], Tensor | None]:
    """A `score(view)` reading per-layer [C_out] importance (None: the layer abstains)."""

    def score(view: LayerView) -> Tensor | None:
        imp = importance.get(view.name)
        return None if imp is None else imp[view.channels.to(imp.device)]

    return score


@torch.no_grad()
def gate_off(model: nn.Module, structure: Structure, removed: dict[str, Tensor]) -> None:
    """Zero every producer output of the removed units: BatchNorm γ and β (the gate after BN) and
    conv/linear filter rows and biases, so the units contribute nothing while training goes on."""
    modules = dict(model.named_modules())
    for name, mask in removed.items():
        for slot in structure.groups[name].producers:
            m = modules[slot.module]
            if not isinstance(m, _WEIGHTED + _BN):
                continue  # PReLU slopes: the zeroed conv/BN outputs already silence the unit
            idx = slot.channels[mask[slot.units]].to(m.weight.device)
            if not len(idx):
                continue
            rows = m.weight.transpose(0, 1) if isinstance(m, nn.ConvTranspose2d) else m.weight
            rows[idx] = 0
            if getattr(m, "bias", None) is not None:
                m.bias[idx] = 0


class IterativeTaylorHook(Hook):
    """The authors' schedule: every `frequency` steps, average the window's squared estimates,
    fold them into a momentum average, remove the lowest units globally towards the target."""

    def __init__(
        self,
        rules: dict[str, str],
        structure: Structure,
        policy: AllocationPolicy,
        target: float,
        *,
        frequency: int,
        momentum: float,
    ) -> None:
        self.rules, self.structure, self.policy, self.target = rules, structure, policy, target
        self.frequency, self.momentum = frequency, momentum
        self.window: dict[str, Tensor] = {}
        self.count = 0
        self.average: dict[str, Tensor] = {}
        self.removed: dict[str, Tensor] = {}
        self.iterations = 1
        self.done = 0
        self.history: list[float] = []  # cost-model MAC ratio after each pruning iteration

    def before_fit(self, s: LoopState) -> None:
        self.iterations = max(1, (s.epochs * s.steps_per_epoch) // self.frequency)

    @torch.no_grad()
    def after_backward(self, s: LoopState) -> None:
        modules = dict(s.model.named_modules())
        for name, rule in self.rules.items():
            c = _contribution(modules[name], rule)
            if c is not None:
                self.window[name] = c if name not in self.window else self.window[name] + c
        self.count += 1

    @torch.no_grad()
    def after_step(self, s: LoopState) -> None:
        if self.removed:
            gate_off(s.model, self.structure, self.removed)  # removed units stay at zero
        if s.step % self.frequency or not self.count or self.done >= self.iterations:
            return
        m = self.momentum
        for name, w in self.window.items():
            now = w / self.count
            prev = self.average.get(name)
            self.average[name] = now if prev is None or not m else m * prev + (1 - m) * now
        self.window, self.count = {}, 0
        self.done += 1
        scores = score_groups(s.model, self.structure, _score_from(self.average))
        for g, mask in self.removed.items():
            scores[g][mask] = 0.0  # gated units: removed already
        step_target = self.target ** (self.done / self.iterations)
        plan = self.policy.allocate(scores, step_target, removed=self.removed)
        self.removed = plan.removed(self.structure)
        gate_off(s.model, self.structure, self.removed)
        self.history.append(self.policy.cost.ratio(self.removed))

    def state_dict(self) -> dict:
        return {"removed": self.removed, "average": self.average, "done": self.done}

    def load_state_dict(self, state: dict) -> None:
        self.removed = dict(state.get("removed", {}))
        self.average = dict(state.get("average", {}))
        self.done = int(state.get("done", 0))


@METHODS.register("taylor")
class Taylor(TrainTimeMethod):
    needs = Needs(data=True, grads=True, training=True)
    #: the authors rank every unit of the network together, on the raw scores
    default_allocation: ClassVar[str] = "global"
    normalize_scores: ClassVar[bool] = False
    #: the one remaining difference of the default from the authors' code
    fidelity: ClassVar[str] = (
        "one-shot from `batches` minibatches, not the authors' iterative removal during "
        "fine-tuning (100 units every 30 minibatches, momentum 0.9; schedule=iterative)"
    )

    def __init__(
        self,
        batches: int = 8,
        variant: str = "auto",
        schedule: str = "oneshot",
        epochs: int | None = None,
        frequency: int = 30,
        momentum: float = 0.9,
    ) -> None:
        if variant not in _VARIANTS:
            raise ConfigError(f"unknown taylor variant '{variant}'; known: {', '.join(_VARIANTS)}")
        if schedule not in _SCHEDULES:
            raise ConfigError(
                f"unknown taylor schedule '{schedule}'; known: {', '.join(_SCHEDULES)}"
            )
        if batches < 1:
            raise ConfigError(f"taylor batches={batches}; it needs at least 1 minibatch")
        if epochs is None:
            epochs = 3 if schedule == "iterative" else 0
        if schedule == "oneshot" and epochs:
            raise ConfigError(
                f"taylor epochs={epochs} applies to schedule=iterative only (one-shot scoring "
                "does not train); set method.schedule=iterative or leave epochs null"
            )
        if frequency < 1 or not 0.0 <= momentum < 1.0 or epochs < 0:
            raise ConfigError(
                f"taylor frequency={frequency}, momentum={momentum}, epochs={epochs}; use "
                "frequency >= 1, 0 <= momentum < 1, epochs >= 0"
            )
        self.batches = batches
        self.variant = variant
        self.schedule = schedule
        self.epochs = epochs  # 0 for one-shot scoring: no training phase
        self.frequency = frequency
        self.momentum = momentum
        self._importance: dict[str, Tensor] | None = None
        self._hook: IterativeTaylorHook | None = None

    @classmethod
    def resolve_config(
        cls, kwargs: dict[str, Any], *, model: str | None, task: str | None
    ) -> dict[str, Any]:
        """`epochs: null` → 3 training epochs for schedule=iterative, 0 (none) for one-shot."""
        kw = dict(kwargs)
        if kw.get("epochs") is None:
            kw["epochs"] = 3 if kw.get("schedule") == "iterative" else 0
        return kw

    def hooks(self, ctx: PruneContext) -> list[Hook]:
        if self.schedule != "iterative":
            return []
        self._hook = IterativeTaylorHook(
            self._rules(ctx.model, ctx.structure),
            ctx.structure,
            ctx.policy,
            ctx.target,
            frequency=self.frequency,
            momentum=self.momentum,
        )
        return [self._hook]

    def train_stats(self) -> dict[str, float]:
        hook = self._hook
        if hook is None:
            return {}
        return {"pruning_iterations": float(hook.done), "gated_ratio": (hook.history or [1.0])[-1]}

    def check_structure(self, model: nn.Module, structure: Structure) -> None:
        """`variant=weight` on a conv→BatchNorm layer scores rounding noise: refuse it."""
        if self.variant != "weight":
            return
        behind = behind_batchnorm(model, structure)
        if behind:
            raise IncompatibleMethodError(
                f"taylor variant=weight scores (Σ g·w)² per filter, which is 0 up to rounding for "
                f"a layer feeding a train-mode BatchNorm ({behind[0]} and {len(behind) - 1} more); "
                "use variant=auto (gate after BN) or weight_sq"
            )

    def _rules(self, model: nn.Module, structure: Structure | None) -> dict[str, str]:
        """Layer name → the rule that scores it ("gate", "weight", "weight_sq")."""
        if structure is not None:
            self.check_structure(model, structure)
        behind = set(behind_batchnorm(model, structure)) if self.variant == "auto" else set()
        rules: dict[str, str] = {}
        for name, m in model.named_modules():
            if isinstance(m, _BN) and self.variant in ("auto", "bn"):
                rules[name] = "gate"
            elif isinstance(m, _WEIGHTED) and self.variant != "bn" and name not in behind:
                rules[name] = "weight_sq" if self.variant == "auto" else self.variant
        return rules

    def prepare(self, ctx: PruneContext) -> None:
        """Average each layer's squared Taylor estimate over `batches` training minibatches; after
        the iterative schedule, its momentum-averaged importance with the gated units at 0."""
        hook, self._hook = self._hook, None  # a later progressive step scores afresh
        if hook is not None and hook.average:
            self._importance = self._gated(hook, ctx)
            return
        model = ctx.model
        rules = self._rules(model, ctx.structure)
        layers = {n: (m, rules[n]) for n, m in model.named_modules() if n in rules}
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}  # BN running stats
        was_training = model.training
        sums: dict[str, Tensor] = {}
        n = 0
        model.train()
        try:
            for batch in itertools.islice(ctx.data.train, self.batches):
                model.zero_grad(set_to_none=True)
                with ctx.runtime.autocast():
                    loss = ctx.task.loss(model, batch)["loss"]
                loss.backward()
                with torch.no_grad():
                    for name, (m, rule) in layers.items():
                        c = _contribution(m, rule)
                        if c is not None:
                            sums[name] = c if name not in sums else sums[name] + c
                n += 1
        finally:
            model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for name, b in model.named_buffers():
                    if name in buffers:
                        b.copy_(buffers[name])
            model.train(was_training)
        if n < self.batches:
            log.warning("taylor: the training split has only %d of %d minibatches", n, self.batches)
        self._importance = {name: s / n for name, s in sums.items()} if n else {}

    @staticmethod
    def _gated(hook: IterativeTaylorHook, ctx: PruneContext) -> dict[str, Tensor]:
        """The hook's averaged importance per layer, 0 on every channel of a gated unit."""
        out = {name: imp.clone() for name, imp in hook.average.items()}
        for name, mask in hook.removed.items():
            for slot in ctx.structure.groups[name].producers:
                if slot.module in out:
                    out[slot.module][slot.channels[mask[slot.units]]] = 0.0
        return out

    def score(self, view: LayerView) -> Tensor | None:
        if self._importance is None:
            raise RuntimeError("method 'taylor' scores before prepare(ctx) gathered gradients")
        imp = self._importance.get(view.name)
        if imp is None:  # an abstaining layer, or one without gradients
            return None
        return imp[view.channels.to(imp.device)]
