"""Taylor importance (Molchanov et al., "Importance Estimation for Neural Network Pruning",
CVPR 2019).

Rule (Eq. 8, per filter; "weight" variant): on each minibatch the first-order Taylor estimate of
the loss change from removing filter j is (Σ_{s ∈ W_j} g_s·w_s)², summed over the filter's
(in, kh, kw) weights; the score is its average over `batches` minibatches, and the smallest are
removed. Conv and linear producers score; BatchNorm and PReLU layers abstain. The paper ranks all
filters together (`default_allocation = "global"`) and prunes iteratively with fine-tuning in
between (the pipeline's progressive steps).

"bn" variant (Eq. 9, the paper's BN-gate form): the score of channel j is (γ_j ∂L/∂γ_j +
β_j ∂L/∂β_j)², averaged likewise; only BatchNorm layers score, so groups without a BatchNorm are
never pruned by it.

The minibatches run in train mode, as in the paper's training-time estimate; the BatchNorm
running statistics are restored afterwards, so scoring leaves the model's weights and buffers
unchanged, and its gradients cleared.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.method import Needs, OneShotMethod
from harness.registry import METHODS
from harness.structure.scoring import out_first

if TYPE_CHECKING:
    from harness.method import PruneContext
    from harness.structure import LayerView

log = logging.getLogger(__name__)

_VARIANTS = ("weight", "bn")
_WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def _contribution(m: nn.Module, variant: str) -> Tensor | None:
    """[C_out] this minibatch's Σ g·w per output channel (or γ·∂γ + β·∂β), before squaring."""
    if variant == "weight":
        w = m.weight
        if w.grad is None:
            return None
        return out_first(m, w.detach() * w.grad).flatten(1).float().sum(dim=1)
    total = None
    for p in (m.weight, m.bias):
        if p is not None and p.grad is not None:
            c = (p.detach() * p.grad).float()
            total = c if total is None else total + c
    return total


@METHODS.register("taylor")
class Taylor(OneShotMethod):
    needs = Needs(data=True, grads=True)
    #: the paper ranks every filter of the network together
    default_allocation: ClassVar[str] = "global"

    def __init__(self, batches: int = 8, variant: str = "weight") -> None:
        if variant not in _VARIANTS:
            raise ConfigError(f"unknown taylor variant '{variant}'; known: {', '.join(_VARIANTS)}")
        if batches < 1:
            raise ConfigError(f"taylor batches={batches}; it needs at least 1 minibatch")
        self.batches = batches
        self.variant = variant
        self._importance: dict[str, Tensor] | None = None

    def prepare(self, ctx: PruneContext) -> None:
        """Average (Σ g·w)² per output channel over `batches` training minibatches."""
        model = ctx.model
        kinds = _WEIGHTED if self.variant == "weight" else _BN
        layers = {n: m for n, m in model.named_modules() if isinstance(m, kinds)}
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
                    for name, m in layers.items():
                        c = _contribution(m, self.variant)
                        if c is not None:
                            sq = c.square()
                            sums[name] = sq if name not in sums else sums[name] + sq
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
        if imp is None:  # a layer of the other kind, or one without gradients
            return None
        return imp[view.channels.to(imp.device)]
