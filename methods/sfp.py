"""Soft Filter Pruning (He et al., "Soft Filter Pruning for Accelerating Deep Convolutional Neural
Networks", IJCAI 2018).

Rule (Sec. 3, Alg. 1): train; at the end of every epoch score each filter by its ℓ2 norm
‖W_j‖₂ = (Σ_{in,kh,kw} W_j²)^½ and set to zero the ⌊P·N_i⌋ smallest filters of every layer i, with
the same pruning rate P for all layers; the zeroed filters keep training in the next epoch (they
are not masked, so they may recover and another filter is zeroed instead). After the last epoch
the zero filters are removed.

Here P comes from the run's MAC target: at each epoch end the harness's own `score_groups` and
the run's allocation policy (`ctx.policy`: uniform by default, every group at the same kept
fraction, the paper's shared P; the run's `prune.allocation`, `normalize`, `floor`,
`min_channels` and `round_to` are honoured, so the zeroed set is exactly what the final cut would
remove) picks the units, and their filters
are zeroed. After the last epoch the pipeline's one-shot cut scores by the same ℓ2 norm, so it
removes the zeroed filters (norm 0, the lowest of every group).

What is zeroed: for every producer conv/linear layer of a group, the removed units' filter rows
and their bias entries — the bias too, so that a zeroed unit contributes nothing, as if removed.
BatchNorm γ/β and consumers' input columns are left alone, as in the paper (it zeroes filters
only): zeroing γ would block recovery for good (the gradient reaching a BN's input is ∝ γ, and
γ's own gradient Σ g·x̂ is 0 on a constant channel), and an unmasked consumer column carries the
gradient back to the zeroed filter.

`freeze: true` zeroes the zeroed filters' gradients until the next epoch end (FPGM's code does;
SFP's does not): `method=sfp method.freeze=true` is FPGM's schedule with SFP's ℓ2 criterion, so
the two criteria can be compared on one schedule.

Caveats of the rule, left as the paper has them: (1) behind a train-mode BatchNorm a zeroed
filter makes its channel's batch variance 0, so its gradient is scaled by γ/√eps (≈ 316·γ at
eps = 1e-5) when the BN output β survives the next ReLU (β > 0), and is 0 when it does not
(β < 0); the first kind jumps to a large norm in one step, is then kept ("recovers") and another
filter is zeroed. (2) In a BN-free net where a ReLU directly follows the zeroed conv, the
pre-activation is exactly 0 and PyTorch's ReLU'(0) = 0: such a filter never recovers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.method import Needs, TrainTimeMethod
from harness.registry import METHODS
from harness.structure import score_groups
from harness.train import Hook

if TYPE_CHECKING:
    from harness.method import PruneContext
    from harness.structure import AllocationPolicy, LayerView, Structure
    from harness.train import LoopState

log = logging.getLogger(__name__)


def l2_filter_score(view: LayerView) -> Tensor | None:
    """[n] ‖W_j‖₂ of the view's conv/linear filters; BatchNorm and PReLU layers abstain."""
    if view.kind not in ("conv", "linear"):
        return None
    return view.weight.flatten(1).float().norm(dim=1)


def _zeroed_rows(
    model: nn.Module, structure: Structure, removed: dict[str, Tensor]
) -> list[tuple[nn.Module, Tensor]]:
    """(layer, output channels) of the `removed` units in every conv/linear producer."""
    modules = dict(model.named_modules())
    rows = []
    for name, mask in removed.items():
        for slot in structure.groups[name].producers:
            m = modules[slot.module]
            if not isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                continue
            idx = slot.channels[mask[slot.units]].to(m.weight.device)  # [k] output channels
            if len(idx):
                rows.append((m, idx))
    return rows


@torch.no_grad()
def zero_filters(model: nn.Module, structure: Structure, removed: dict[str, Tensor]) -> int:
    """Zero the filter rows and bias entries of the `removed` units in every conv/linear producer.

    Returns the number of filters zeroed (summed over layers).
    """
    count = 0
    for m, idx in _zeroed_rows(model, structure, removed):
        if isinstance(m, nn.ConvTranspose2d):
            # weight is [C_in, C_out, kh, kw]; grouped transposed convs are frozen groups
            m.weight[:, idx] = 0
        else:
            m.weight[idx] = 0
        if m.bias is not None:
            m.bias[idx] = 0
        count += len(idx)
    return count


class SoftFilterHook(Hook):
    """After every epoch: zero the filters the harness would cut at `target` by `score` (ℓ2 norm
    for SFP; FPGM's distance criterion for FPGM's soft schedule), allocated by the run's policy.

    `freeze`: also zero the gradients of the zeroed filters (weight rows and bias entries) after
    every backward until the next epoch end, so they stay at zero while the rest trains — what
    FPGM's code does (`Mask.do_grad_mask()` before every `optimizer.step()` in
    he-y/filter-pruning-geometric-median); SFP's code does not (its filters train back). The
    epoch-end re-selection still lets any filter in or out."""

    def __init__(
        self,
        structure: Structure,
        policy: AllocationPolicy,
        target: float,
        *,
        score: Callable[[LayerView], Tensor | None] = l2_filter_score,
        freeze: bool = False,
    ) -> None:
        self.score = score
        self.structure = structure
        self.policy = policy
        self.target = target
        self.freeze = freeze
        self.removed: dict[str, Tensor] = {}  # the last epoch's zeroed units, per group
        self._frozen: list[tuple[nn.Module, Tensor]] | None = None  # (layer, rows) to hold at 0

    def after_backward(self, s: LoopState) -> None:
        if not self.freeze or not self.removed:
            return
        if self._frozen is None:
            self._frozen = _zeroed_rows(s.model, self.structure, self.removed)
        for m, idx in self._frozen:
            for p in (m.weight, m.bias):
                if p is not None and p.grad is not None:
                    if isinstance(m, nn.ConvTranspose2d) and p is m.weight:
                        p.grad[:, idx] = 0
                    else:
                        p.grad[idx] = 0

    def after_epoch(self, s: LoopState) -> None:
        # host work once per epoch (scores to CPU, allocation): fine off the step path
        scores = score_groups(s.model, self.structure, self.score)
        removed = self.policy.allocate(scores, self.target).removed(self.structure)
        zeroed = zero_filters(s.model, self.structure, removed)
        # units zeroed last epoch that the norm ranking now keeps: they recovered
        recovered = sum(
            int((prev & ~removed[g]).sum()) for g, prev in self.removed.items() if g in removed
        )
        self.removed = removed
        self._frozen = None  # rebuilt from the new selection at the next backward
        s.metrics["sfp_zeroed"] = float(zeroed)
        s.metrics["sfp_recovered_units"] = float(recovered)
        log.info("sfp: epoch %d zeroed %d filters; %d units recovered", s.epoch, zeroed, recovered)

    def state_dict(self) -> dict[str, Any]:
        return {"removed": {g: m.clone() for g, m in self.removed.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.removed = {g: m.clone() for g, m in state.get("removed", {}).items()}
        self._frozen = None


def check_freeze(method: str, freeze: object) -> bool:
    """`freeze` as given, or a one-line error naming the method."""
    if not isinstance(freeze, bool):
        raise ConfigError(f"{method} freeze={freeze!r}; use true or false")
    return freeze


def soft_filter_hook(
    ctx: PruneContext, score: Callable[[LayerView], Tensor | None], *, freeze: bool = False
) -> SoftFilterHook:
    """The soft-pruning hook zeroing by `score` with the run's allocation policy (`ctx.policy`),
    so what a train-time method zeroes during training is what the final cut removes."""
    return SoftFilterHook(ctx.structure, ctx.policy, ctx.target, score=score, freeze=freeze)


@METHODS.register("sfp")
class SFP(TrainTimeMethod):
    needs = Needs(training=True)
    #: the paper prunes every layer at the same rate P
    default_allocation: ClassVar[str] = "uniform"
    fidelity: ClassVar[str] = (
        "3 soft-pruning epochs from the trained baseline at the fine-tuning LR, not soft pruning "
        "through the paper's whole training schedule"
    )

    def __init__(self, epochs: int = 3, freeze: bool = False) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(
                f"sfp epochs={epochs!r}; use an integer >= 1 (epochs of soft pruning from the "
                "baseline; with 0 it would be plain l2 pruning: use method=l2)"
            )
        self.epochs = epochs
        self.freeze = check_freeze("sfp", freeze)

    def hooks(self, ctx: PruneContext) -> list[Hook]:
        return [soft_filter_hook(ctx, l2_filter_score, freeze=self.freeze)]

    def score(self, view: LayerView) -> Tensor | None:
        return l2_filter_score(view)
