"""L2-norm filter pruning: the ℓ2 variant of Li et al. (ICLR 2017), as used by SFP (He et al.,
IJCAI 2018) and Torch-Pruning's MagnitudeImportance(p=2).

Rule: a filter's importance is ‖W_j‖₂ = (Σ_{in,kh,kw} W_j²)^½; the smallest are removed. Conv and
linear producers score; BatchNorm and PReLU layers abstain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import Tensor

from harness.method import Needs, OneShotMethod
from harness.registry import METHODS

if TYPE_CHECKING:
    from harness.structure import LayerView


@METHODS.register("l2")
class L2Norm(OneShotMethod):
    needs = Needs()
    fidelity: ClassVar[str] = (
        "the same rate in every group by default, not per-layer rates from a sensitivity "
        "analysis (as l1)"
    )

    def score(self, view: LayerView) -> Tensor | None:
        if view.kind not in ("conv", "linear"):
            return None
        return view.weight.flatten(1).norm(p=2, dim=1)  # [n]
