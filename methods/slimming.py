"""Network slimming (Liu et al., "Learning Efficient Convolutional Networks through Network
Slimming", ICCV 2017; authors' code Eric-mingjie/network-slimming).

Rule (Eq. 1): train with L = loss + λ Σ_γ |γ| over every BatchNorm scale γ; its subgradient adds
λ·sign(γ) to each γ's gradient after backward (Sec. 3.2; the authors' `updateBN`). Then a
channel's score is |γ| of its BatchNorm, and the channels below one *global* |γ| threshold are
removed (Sec. 3.3), which is why `default_allocation = "global"` on raw scores; keep
`prune.floor` > 0, since a global threshold can wipe a layer. Conv and linear layers abstain, so
groups without a BatchNorm are never pruned by this method.

λ (`lam`, null: per model family as the paper gives it): 1e-4 for VGG, 1e-5 for ResNet and
DenseNet and, by default, every other model.

Schedules (`schedule`):
- `paper`: the published one: the network is re-initialised and trained from scratch under the
  penalty with the run's own training recipe (the `train` section: SGD at LR 0.1 for the CIFAR
  models, as the paper's 160 epochs) for `epochs` (null: 160) epochs.
- `finetune` (default, CPU-sized): `epochs` (null: 5) epochs from the trained baseline at the
  fine-tuning optimiser. Remaining difference: far less total shrink of |γ| than the paper (the
  pull is ≈ λ·Σ lr per γ, times ~10 with momentum 0.9); the run record reports it as
  `search_gamma_l1_before/after/shrink` so a reader sees how much sparsity training happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

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


#: the paper's λ per model family (Sec. 4.3); other models get the ResNet/DenseNet value
PAPER_LAMBDA = {"vgg": 1.0e-4, "resnet": 1.0e-5, "densenet": 1.0e-5}
DEFAULT_LAMBDA = 1.0e-5
SCHEDULES = {"finetune": 5, "paper": 160}  # schedule → default epochs


def paper_lambda(model: str | None) -> float:
    """The paper's λ for a model name: 1e-4 for VGG, 1e-5 for ResNet/DenseNet and the rest."""
    name = (model or "").lower()
    return next((lam for fam, lam in PAPER_LAMBDA.items() if name.startswith(fam)), DEFAULT_LAMBDA)


def _gamma_l1(model: nn.Module) -> float:
    """Σ |γ| over every BatchNorm (one host sync; called once before and once after training)."""
    return sum(
        float(m.weight.detach().abs().sum())
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None
    )


def reinitialise(model: nn.Module) -> None:
    """Fresh weights for every layer that has `reset_parameters` (BN γ = 1, β = 0, stats reset)."""
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()


class BNSparsityHook(Hook):
    """After backward: γ.grad += λ·sign(γ) for every BatchNorm (the L1 subgradient on γ).

    `from_scratch`: re-initialise the model first (the paper's schedule). Records Σ|γ| before
    and after training in `stats`."""

    def __init__(self, lam: float, *, from_scratch: bool = False) -> None:
        self.lam = lam
        self.from_scratch = from_scratch
        self.stats: dict[str, float] = {}

    @torch.no_grad()
    def before_fit(self, s: LoopState) -> None:
        if self.from_scratch:
            reinitialise(s.model)
        self.stats = {"gamma_l1_before": _gamma_l1(s.model)}

    def after_fit(self, s: LoopState) -> None:
        if "gamma_l1_before" in self.stats:
            after = _gamma_l1(s.model)
            self.stats["gamma_l1_after"] = after
            self.stats["gamma_l1_shrink"] = self.stats["gamma_l1_before"] - after

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

    fidelity: ClassVar[str] = (
        "5 epochs from the trained baseline at the fine-tuning LR, not 160 from scratch "
        "(schedule=paper): far less |γ| shrink, reported as search_gamma_l1_shrink"
    )

    def __init__(
        self, lam: float = DEFAULT_LAMBDA, epochs: int = 5, schedule: str = "finetune"
    ) -> None:
        if schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown slimming schedule '{schedule}'; known: {', '.join(SCHEDULES)}"
            )
        if lam < 0 or epochs < 0:
            raise ConfigError(
                f"slimming needs lam >= 0 and epochs >= 0, got lam={lam}, epochs={epochs}"
            )
        self.lam = lam
        self.epochs = epochs
        self.schedule = schedule
        self._hook: BNSparsityHook | None = None

    @classmethod
    def resolve_config(
        cls, kwargs: dict[str, Any], *, model: str | None, task: str | None
    ) -> dict[str, Any]:
        """`lam: null` → the paper's λ for the model family; `epochs: null` → the schedule's."""
        kw = dict(kwargs)
        if kw.get("lam") is None:
            kw["lam"] = paper_lambda(model)
        if kw.get("epochs") is None:
            kw["epochs"] = SCHEDULES.get(kw.get("schedule") or "finetune", 5)
        if kw.get("schedule") is None:
            kw.pop("schedule", None)
        return kw

    def hooks(self, ctx: PruneContext) -> list[Hook]:
        self._hook = BNSparsityHook(self.lam, from_scratch=self.schedule == "paper")
        return [self._hook]

    def train_optim(self, ctx: PruneContext) -> Mapping[str, Any]:
        """The paper trains from scratch with the normal training recipe; else fine-tuning's."""
        return ctx.train if self.schedule == "paper" else ctx.finetune

    def train_stats(self) -> dict[str, float]:
        return dict(self._hook.stats) if self._hook is not None else {}

    def score(self, view: LayerView) -> Tensor | None:
        if view.kind != "bn":
            return None
        return view.weight.abs()  # [n] |γ|
