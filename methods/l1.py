"""L1-norm filter pruning (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017).

Rule (Sec. 3.1): a filter's importance is its absolute weight sum s_j = Σ_{in,kh,kw} |W_j|;
the filters with the smallest s_j are removed. Applied to conv and linear producers; BatchNorm and
PReLU layers abstain, so a group's score is the mean over its conv/linear producers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import Tensor

from harness.method import Needs, OneShotMethod
from harness.registry import METHODS

if TYPE_CHECKING:
    from harness.structure import LayerView


@METHODS.register("l1")
class L1Norm(OneShotMethod):
    needs = Needs()
    fidelity: ClassVar[str] = (
        "the same rate in every group by default, not the paper's per-layer rates from a "
        "sensitivity analysis"
    )

    def score(self, view: LayerView) -> Tensor | None:
        if view.kind not in ("conv", "linear"):
            return None
        return view.weight.flatten(1).abs().sum(dim=1)  # [n]
