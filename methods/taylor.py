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

Remaining difference of the default: the authors prune iteratively during fine-tuning (remove 100
neurons every 30 minibatches, importance averaged with momentum 0.9, training in between); here
the score is gathered once from `batches` minibatches (the pipeline's `prune.steps` with
`prune.finetune_between` gives a coarse iterative schedule). The BatchNorm running statistics are
restored after scoring, so it leaves the model's weights and buffers unchanged, grads cleared.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from harness.errors import ConfigError, IncompatibleMethodError
from harness.method import Needs, OneShotMethod
from harness.registry import METHODS
from harness.structure.scoring import out_first

if TYPE_CHECKING:
    from harness.method import PruneContext
    from harness.structure import LayerView, Structure

log = logging.getLogger(__name__)

_VARIANTS = ("auto", "bn", "weight_sq", "weight")
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


@METHODS.register("taylor")
class Taylor(OneShotMethod):
    needs = Needs(data=True, grads=True)
    #: the authors rank every unit of the network together, on the raw scores
    default_allocation: ClassVar[str] = "global"
    normalize_scores: ClassVar[bool] = False
    #: the one remaining difference of the default from the authors' code
    fidelity: ClassVar[str] = (
        "one-shot from `batches` minibatches, not the authors' iterative removal during "
        "fine-tuning (100 units every 30 minibatches, momentum-0.9 averaged importance)"
    )

    def __init__(self, batches: int = 8, variant: str = "auto") -> None:
        if variant not in _VARIANTS:
            raise ConfigError(f"unknown taylor variant '{variant}'; known: {', '.join(_VARIANTS)}")
        if batches < 1:
            raise ConfigError(f"taylor batches={batches}; it needs at least 1 minibatch")
        self.batches = batches
        self.variant = variant
        self._importance: dict[str, Tensor] | None = None

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
        """Average each layer's squared Taylor estimate over `batches` training minibatches."""
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

    def score(self, view: LayerView) -> Tensor | None:
        if self._importance is None:
            raise RuntimeError("method 'taylor' scores before prepare(ctx) gathered gradients")
        imp = self._importance.get(view.name)
        if imp is None:  # an abstaining layer, or one without gradients
            return None
        return imp[view.channels.to(imp.device)]
