"""L∞ filter pruning: a filter's importance is its largest absolute weight."""

from __future__ import annotations

from torch import Tensor

from harness.method import Needs, OneShotMethod
from harness.structure import LayerView


class LInfNorm(OneShotMethod):
    needs = Needs()

    def score(self, view: LayerView) -> Tensor | None:
        if view.kind not in ("conv", "linear"):
            return None  # BatchNorm and PReLU abstain
        return view.weight.flatten(1).abs().amax(dim=1)
