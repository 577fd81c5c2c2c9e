"""FPGM (He et al., "Filter Pruning via Geometric Median for Deep CNN Acceleration", CVPR 2019).

Rule (Eq. 6-8): filters nearest the geometric median of their layer are the most replaceable by
their peers. The median is approximated by the filter minimising the summed distance to all
others, so filter j's score is s_j = Σ_k ‖F_j − F_k‖_p over every filter k of the *same layer*
(p = 2 in the paper); the smallest s_j are removed. Distances are taken over the layer's whole
weight (read from `view.module`, not only the group's rows in `view.weight`) and then indexed by
`view.channels`. Conv and linear producers score; BatchNorm and PReLU layers abstain.

This is FPGM's criterion used one-shot (as Torch-Pruning's FPGMImportance); the paper's soft
schedule (re-masking every epoch, SFP-style) is a train-time method of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from harness.errors import ConfigError
from harness.method import Needs, OneShotMethod
from harness.registry import METHODS
from harness.structure.scoring import out_first

if TYPE_CHECKING:
    from harness.structure import LayerView


@METHODS.register("fpgm")
class FPGM(OneShotMethod):
    needs = Needs()

    def __init__(self, p: float = 2.0) -> None:
        if not p > 0:
            raise ConfigError(f"fpgm distance norm p={p}; use p > 0 (the paper uses 2.0)")
        self.p = p

    def score(self, view: LayerView) -> Tensor | None:
        if view.kind not in ("conv", "linear"):
            return None
        w = out_first(view.module).detach().flatten(1).float()  # [C_out, d]
        dist = torch.cdist(w, w, p=self.p).sum(dim=1)  # [C_out] distance to all peers
        return dist[view.channels.to(dist.device)]
