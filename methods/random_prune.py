"""Random pruning: the control every pruning paper should beat.

Rule: each output channel gets an independent Uniform[0, 1) score; the harness then removes the
lowest-scored channels to the MAC target (per layer or globally, by `prune.allocation`). Scores
come from a `torch.Generator` seeded by the run seed and the layer name, so the same seed gives the
same plan whatever order the layers are scored in, and different seeds give different plans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from harness.method import Needs, OneShotMethod
from harness.registry import METHODS
from harness.runtime.seeds import derive_seed

if TYPE_CHECKING:
    from harness.method import PruneContext
    from harness.structure import LayerView


def _layer_width(view: LayerView) -> int:
    """Output channels of the whole layer (the view holds only one group's rows)."""
    m = view.module
    for attr in ("out_channels", "out_features", "num_features", "num_parameters"):
        if hasattr(m, attr):
            return int(getattr(m, attr))
    return int(view.channels.max()) + 1


@METHODS.register("random")
class RandomPrune(OneShotMethod):
    needs = Needs()

    def __init__(self) -> None:
        self._seed: int | None = None

    def prepare(self, ctx: PruneContext) -> None:
        self._seed = int(ctx.seed)

    def score(self, view: LayerView) -> Tensor:
        if self._seed is None:
            raise RuntimeError("method 'random' scores before prepare(ctx) set its seed")
        # one generator per (seed, layer): independent of scoring order, same draw on re-scoring
        g = torch.Generator().manual_seed(derive_seed(self._seed, view.name))
        return torch.rand(_layer_width(view), generator=g)[view.channels]
