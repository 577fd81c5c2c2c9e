"""Network slimming (Liu et al., "Learning Efficient Convolutional Networks through Network
Slimming", ICCV 2017).

Rule (Eq. 1): train with L = loss + λ Σ_γ |γ| over every BatchNorm scale γ; its subgradient adds
λ·sign(γ) to each γ's gradient after backward (Sec. 3.2). Then a channel's score is |γ| of its
BatchNorm, and the channels below one *global* |γ| threshold are removed (Sec. 3.3), which is why
`default_allocation = "global"`; keep `prune.floor` > 0, since a global threshold can wipe a layer.
Conv and linear layers abstain, so groups without a BatchNorm are never pruned by this method.

Paper defaults: λ = 1e-4 for VGG, 1e-5 for ResNet and DenseNet; `lam` defaults to 1e-4 (VGG) —
set `method.lam=1.0e-5` for residual networks. `epochs` is the length of the sparsity-training
phase, run from the trained baseline (the paper trains from scratch with the penalty; fine-tuning
the baseline with it is the common benchmark shortcut).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.method import Needs, TrainTimeMethod
from harness.registry import METHODS
from harness.train import Hook

if TYPE_CHECKING:
    from harness.method import PruneContext
    from harness.structure import LayerView
    from harness.train import LoopState


class BNSparsityHook(Hook):
    """After backward: γ.grad += λ·sign(γ) for every BatchNorm (the L1 subgradient on γ)."""

    def __init__(self, lam: float) -> None:
        self.lam = lam

    @torch.no_grad()
    def after_backward(self, s: LoopState) -> None:
        for m in s.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                if m.weight.grad is not None:  # stays on the device: no sync
                    m.weight.grad.add_(torch.sign(m.weight), alpha=self.lam)


@METHODS.register("slimming")
class Slimming(TrainTimeMethod):
    needs = Needs(batchnorm=True, training=True)
    #: the paper prunes below one global |γ| threshold; the pipeline should honour this default
    default_allocation: ClassVar[str] = "global"
    normalize_scores: ClassVar[bool] = False  # one global threshold on raw |γ| (the paper's rule)

    def __init__(self, lam: float = 1.0e-4, epochs: int = 5) -> None:
        if lam < 0 or epochs < 0:
            raise ConfigError(
                f"slimming needs lam >= 0 and epochs >= 0, got lam={lam}, epochs={epochs}"
            )
        self.lam = lam
        self.epochs = epochs

    def hooks(self, ctx: PruneContext) -> list[Hook]:
        return [BNSparsityHook(self.lam)]

    def score(self, view: LayerView) -> Tensor | None:
        if view.kind != "bn":
            return None
        return view.weight.abs()  # [n] |γ|
