"""FPGM (He et al., "Filter Pruning via Geometric Median for Deep CNN Acceleration", CVPR 2019;
authors' code he-y/filter-pruning-geometric-median).

Rule (Eq. 6-8): filters nearest the geometric median of their layer are the most replaceable by
their peers. The median is approximated by the filter minimising the summed distance to all
others, so filter j's score is s_j = Σ_k ‖F_j − F_k‖_p over every filter k of the *same layer*
(p = 2 in the paper; the authors' `get_filter_similar`); the smallest s_j are removed. Distances
are taken over the layer's whole weight (read from `view.module`, not only the group's rows in
`view.weight`) and then indexed by `view.channels`. Conv and linear producers score; BatchNorm
and PReLU layers abstain. An all-zero filter scores 0 (it is already gone).

Schedule (`epochs`): the paper's soft schedule, the same as SFP's — at every epoch end the
lowest-scored filters of every layer (same rate, `default_allocation = "uniform"`) are zeroed;
after the last epoch the zeroed filters are cut. The default `epochs: 3` equals SFP's, so FPGM vs
SFP compares the criteria, not the schedules. `freeze: true` (default) holds the zeroed filters at
zero until the next epoch end by zeroing their gradients after every backward, as the authors'
code does (`Mask.do_grad_mask()` before every `optimizer.step()`; the epoch-end re-selection can
still swap filters). Without it (`freeze: false`, SFP's rule) a zeroed filter behind a train-mode
BatchNorm gets its gradient scaled by γ/√eps, comes back larger than its trained peers within an
epoch, is kept, and a trained filter is zeroed instead: measured on digits / ResNet-20 at target
0.3, only 27 of 199 units zeroed at the first epoch end were zeroed again at the second (199 of
199 with `freeze`), and 6 fine-tuning epochs recovered validation to 64 % (94.5 % with `freeze`;
results/baselines_fidelity.md). `epochs: 0` is the criterion
used one-shot (as Torch-Pruning's FPGMImportance). Remaining difference of the default: 3 soft
epochs from the trained baseline at the fine-tuning LR, where the paper soft-prunes during its
whole 200-epoch training (or fine-tunes a pretrained model with it for the full schedule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from harness.errors import ConfigError
from harness.method import Needs, TrainTimeMethod
from harness.registry import METHODS
from harness.structure.scoring import out_first
from methods.sfp import SoftFilterHook, check_freeze, soft_filter_hook

if TYPE_CHECKING:
    from harness.method import PruneContext
    from harness.structure import LayerView
    from harness.train import Hook


def fpgm_distances(view: LayerView, p: float = 2.0) -> Tensor | None:
    """[C_out] Σ_k ‖F_j − F_k‖_p of every filter j of the view's whole layer."""
    if view.kind not in ("conv", "linear"):
        return None
    w = out_first(view.module).detach().flatten(1).float()  # [C_out, d]
    return torch.cdist(w, w, p=p).sum(dim=1)  # [C_out] distance to all peers


@METHODS.register("fpgm")
class FPGM(TrainTimeMethod):
    needs = Needs(training=True)
    fidelity: ClassVar[str] = (
        "3 soft-pruning epochs from the trained baseline (as SFP here), not soft pruning "
        "through the paper's whole training schedule"
    )

    def __init__(self, p: float = 2.0, epochs: int = 3, freeze: bool = True) -> None:
        if not p > 0:
            raise ConfigError(f"fpgm distance norm p={p}; use p > 0 (the paper uses 2.0)")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ConfigError(
                f"fpgm epochs={epochs!r}; use an integer >= 0 (soft-pruning epochs; 0: one-shot)"
            )
        self.p = p
        self.epochs = epochs
        self.freeze = check_freeze("fpgm", freeze)
        self._hook: SoftFilterHook | None = None
        self._zeroed: dict[str, Tensor] = {}  # layer → output channels zeroed at the last epoch

    def hooks(self, ctx: PruneContext) -> list[Hook]:
        self._hook = soft_filter_hook(ctx, self._distance, freeze=self.freeze)
        return [self._hook]

    def prepare(self, ctx: PruneContext) -> None:
        """After the soft schedule: the filters zeroed at its last epoch end score 0, so the cut
        removes exactly them (by distance alone a zero filter need not be the lowest)."""
        self._zeroed = {}
        removed = self._hook.removed if self._hook is not None else {}
        for name, mask in removed.items():
            for slot in ctx.structure.groups[name].producers:
                chans = slot.channels[mask[slot.units]]
                prev = self._zeroed.get(slot.module)
                self._zeroed[slot.module] = chans if prev is None else torch.cat([prev, chans])
        self._hook = None  # a later progressive step scores by distance alone

    def _distance(self, view: LayerView) -> Tensor | None:
        dist = fpgm_distances(view, self.p)
        return None if dist is None else dist[view.channels.to(dist.device)]

    def score(self, view: LayerView) -> Tensor | None:
        dist = fpgm_distances(view, self.p)
        if dist is None:
            return None
        zeroed = self._zeroed.get(view.name)
        if zeroed is not None and len(zeroed):
            dist = dist.clone()
            dist[zeroed.to(dist.device)] = 0.0
        return dist[view.channels.to(dist.device)]
