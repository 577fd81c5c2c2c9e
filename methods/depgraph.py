"""DepGraph group-level pruning (Fang et al., "DepGraph: Towards Any Structural Pruning",
CVPR 2023; reference code: Torch-Pruning's GroupNormPruner, `reproduce/main.py --method group_sl`).

Rule (Sec. 3.3, group-level pruning): all weights coupled to one channel unit of a group — the
producers' output rows (conv/linear filters, BatchNorm γ) and the consumers' input columns — are
one parameter set θ_{g,k}, removed together, so they are made sparse together and scored together.
As in Torch-Pruning (its default `bias=False`), biases, BatchNorm β and PReLU slopes are neither
regularised nor scored.

- Sparsity learning, for `epochs` epochs from the baseline: after backward,
  θ_{g,k}.grad += λ γ_k θ_{g,k} (GroupNormPruner.regularize: the gradient of
  (λ/2) Σ_k γ_k ‖θ_{g,k}‖², the paper's γ_k·I_k penalty), with the importance-adaptive strength
  γ_k = 2^{α (‖θ‖_max − ‖θ_{g,k}‖)/(‖θ‖_max − ‖θ‖_min)} within each group (γ_k ∈ [1, 2^α]; the
  least important unit is shrunk hardest; Torch-Pruning's `alpha=2**4` is our α = 4), recomputed
  every step and not differentiated; α = 0 gives γ_k = 1, plain group weight decay. As in the
  reference, the optimiser's own weight decay is off during this phase (`train_optim`).
- Momentum: the pull is a decay of θ by lr·λ·γ_k per step *before* SGD momentum m; momentum
  accumulates it, so in steady state θ shrinks by lr·λ·γ_k/(1 − m) per step — 10× the
  momentum-free rate at m = 0.9 (tests/methods/test_fidelity.py checks the trajectory with
  momentum against Torch-Pruning's own regulariser).
- Defaults: λ = 5e-4 and α = 4, the reference's CIFAR values (`--reg 5e-4`; the reference trains
  100 sparsity epochs at LR 0.01, milestones 60/80). `epochs: 3` is the CPU-sized default:
  θ of the least important unit decays by ≈ exp(−Σ_t lr_t·λ·2^α/(1 − m)), far less than after the
  reference's 100 epochs (`epochs: 100` is the reference schedule at the fine-tuning LR).
- Pruning: unit k scores ‖θ_{g,k}‖² divided by its group's maximum (GroupMagnitudeImportance
  (p=2, normalizer="max"), as the reference's CIFAR runs), and all groups' units are ranked
  together (`--global-pruning`): `default_allocation = "global"`, `normalize_scores = False`
  (the max-normalisation is the score's own); keep `prune.floor` > 0, as any global ranking can
  empty a group.

`epochs: 0` skips the sparsity learning: plain group-norm magnitude pruning (the paper's
"w/o SL" ablation). Only prunable groups are regularised (frozen groups are never cut). Depthwise
convs: their input channel is their output filter, counted once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.method import Needs, TrainTimeMethod
from harness.registry import METHODS
from harness.structure.scoring import out_first
from harness.train import Hook

if TYPE_CHECKING:
    from harness.method import PruneContext
    from harness.structure import ChannelGroup, LayerView, Structure
    from harness.train import LoopState


@dataclass(frozen=True)
class Piece:
    """The slices of one parameter that belong to one group: index `channels[i]` along `dim`
    (a filter row, a γ entry, an input column) is owned by unit `units[i]`."""

    module: str
    param: str  # "weight" | "bias"
    dim: int
    channels: Tensor  # [n] int64
    units: Tensor  # [n] int64


def group_pieces(model: nn.Module, group: ChannelGroup) -> list[Piece]:
    """Every weight slice of the group's slots: producers' output rows (conv/linear filters,
    BatchNorm γ) and consumers' input columns; no biases, β or PReLU slopes (Torch-Pruning's
    default `bias=False`)."""
    modules = dict(model.named_modules())
    pieces: list[Piece] = []
    for slot in group.slots:
        m = modules[slot.module]
        if slot.side == "out":
            if isinstance(m, nn.ConvTranspose2d):  # [C_in, C_out, kh, kw]; groups=1 (else frozen)
                dims = {"weight": 1}
            elif isinstance(m, nn.Conv2d | nn.Linear | nn.BatchNorm1d | nn.BatchNorm2d):
                dims = {"weight": 0}
            else:
                continue
        else:
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and m.groups > 1:
                continue  # depthwise: its input channel is its output filter, counted once
            if isinstance(m, nn.ConvTranspose2d):
                dims = {"weight": 0}
            elif isinstance(m, nn.Conv2d | nn.Linear):
                dims = {"weight": 1}
            else:
                continue
        for param, dim in dims.items():
            if getattr(m, param, None) is not None:
                pieces.append(Piece(slot.module, param, dim, slot.channels, slot.units))
    return pieces


def _cat(parts: list[Tensor], device: torch.device) -> Tensor:
    return torch.cat(parts).to(device) if parts else torch.zeros(0, dtype=torch.long)


class GroupLayout:
    """Every prunable group's parameter slices as flat index tensors, built once.

    The parameter sides (parameter, dim) that any group touches are laid end to end as one vector
    of per-index values ([Σ C_side]); the units of all groups likewise ([Σ size]). `chan[i]` and
    `unit[i]` pair one slice with its unit, so a step needs one reduction per side and a constant
    number of gather/scatter kernels, whatever the number of groups.
    """

    def __init__(self, model: nn.Module, structure: Structure) -> None:
        params = dict(model.named_parameters())
        self.sides: list[tuple[nn.Parameter, int]] = []
        side_of: dict[tuple[str, int], int] = {}
        offsets = [0]
        chan, unit, group_id = [], [], []
        self.groups: list[tuple[str, int]] = []  # (name, size) in unit order
        n_units = 0
        for g in structure.prunable:
            pieces = group_pieces(model, g)
            if not pieces:
                continue
            for p in pieces:
                key = (f"{p.module}.{p.param}", p.dim)
                if key not in side_of:
                    w = params[key[0]]
                    side_of[key] = len(self.sides)
                    self.sides.append((w, p.dim))
                    offsets.append(offsets[-1] + w.shape[p.dim])
                chan.append(p.channels + offsets[side_of[key]])
                unit.append(p.units + n_units)
            group_id.append(torch.full((g.size,), len(self.groups), dtype=torch.long))
            self.groups.append((g.name, g.size))
            n_units += g.size
        device = self.sides[0][0].device if self.sides else torch.device("cpu")
        self.chan = _cat(chan, device)  # [P] slice → index into the side vector
        self.unit = _cat(unit, device)  # [P] slice → unit
        self.group_id = _cat(group_id, device)  # [U] unit → group
        self.n_channels, self.n_units = offsets[-1], n_units
        self.widths = [w.shape[d] for w, d in self.sides]
        # the dims each side's squared values are summed over, and the shape its [C] broadcasts as
        self.reduce = [tuple(i for i in range(w.dim()) if i != d) for w, d in self.sides]
        self.shapes = [[-1 if i == d else 1 for i in range(w.dim())] for w, d in self.sides]

    def unit_sq_norms(self) -> Tensor:
        """[Σ size] ‖θ_{g,k}‖₂² of every unit (float32, on the parameters' device)."""
        per_side = []
        for (w, _), dims in zip(self.sides, self.reduce, strict=True):
            sq = w.detach().float().square()
            per_side.append(sq.sum(dim=dims) if dims else sq)  # [C_side]
        flat = torch.cat(per_side)  # [Σ C_side]
        return torch.zeros(self.n_units, device=flat.device).index_add_(
            0, self.unit, flat[self.chan]
        )

    def add_per_unit(self, coef: Tensor) -> None:
        """θ.grad += coef[k]·θ for every slice θ of unit k (coef: [Σ size])."""
        per_chan = torch.zeros(self.n_channels, device=coef.device)
        per_chan.index_add_(0, self.chan, coef[self.unit])  # [Σ C_side]; 0 outside any group
        for (w, _), c, shape in zip(
            self.sides, per_chan.split(self.widths), self.shapes, strict=True
        ):
            if w.grad is not None:
                w.grad.addcmul_(w.detach(), c.view(shape).to(w.grad.dtype))

    def split(self, per_unit: Tensor) -> dict[str, Tensor]:
        """Group name → its [size] slice of a [Σ size] vector."""
        parts = per_unit.split([size for _, size in self.groups])
        return {name: part for (name, _), part in zip(self.groups, parts, strict=True)}


@torch.no_grad()
def group_norms(model: nn.Module, structure: Structure) -> dict[str, Tensor]:
    """Group name → [size] ‖θ_{g,k}‖₂ over every weight slice (`group_pieces`), for every prunable
    group (on the CPU)."""
    layout = GroupLayout(model, structure)
    return {g: n.cpu() for g, n in layout.split(layout.unit_sq_norms().sqrt()).items()}


class GroupNormHook(Hook):
    """After backward: θ.grad += λ γ_k θ_{g,k} for every unit k of every group (the reference's
    GroupNormPruner.regularize), γ_k = 2^{α (‖θ‖_max − ‖θ_k‖)/(‖θ‖_max − ‖θ‖_min)} per group."""

    def __init__(self, structure: Structure, lam: float, alpha: float = 0.0) -> None:
        self.structure = structure
        self.lam = lam
        self.alpha = alpha
        self._layout: GroupLayout | None = None

    def before_fit(self, s: LoopState) -> None:
        """Build the index tensors once, on the model's device."""
        self._layout = GroupLayout(s.model, self.structure)

    @torch.no_grad()
    def after_backward(self, s: LoopState) -> None:
        layout = self._layout
        if layout is None or not layout.n_units:
            return
        norm = layout.unit_sq_norms().sqrt()  # [U] ‖θ_k‖
        coef = torch.full_like(norm, self.lam)
        if self.alpha:
            gid, n = layout.group_id, len(layout.groups)
            hi = norm.new_zeros(n).scatter_reduce_(0, gid, norm, "amax", include_self=False)[gid]
            lo = norm.new_zeros(n).scatter_reduce_(0, gid, norm, "amin", include_self=False)[gid]
            # a group whose units are all equal gets γ = 1 (the reference would get 0/0)
            coef = coef * torch.exp2(self.alpha * (hi - norm) / (hi - lo).clamp_min(1e-30))
        layout.add_per_unit(coef)

    def after_fit(self, s: LoopState) -> None:
        self._layout = None  # drop the parameter references


@METHODS.register("depgraph")
class DepGraph(TrainTimeMethod):
    needs = Needs(training=True)
    #: group sparsity learning decides per-group rates: rank all groups' units together
    default_allocation: ClassVar[str] = "global"
    #: scores are divided by their group's maximum already (the reference's normalizer="max")
    normalize_scores: ClassVar[bool] = False
    fidelity: ClassVar[str] = (
        "3 sparsity-learning epochs at the fine-tuning LR, not the reference's 100 at LR 0.01 "
        "(set method.epochs=100): far less shrinkage before the cut"
    )

    def __init__(self, lam: float = 5.0e-4, alpha: float = 4.0, epochs: int = 3) -> None:
        if not (isinstance(lam, int | float) and lam >= 0):
            raise ConfigError(f"depgraph lam={lam!r}; use lam >= 0 (0 disables sparsity learning)")
        if not (isinstance(alpha, int | float) and 0 <= alpha <= 10):
            raise ConfigError(
                f"depgraph alpha={alpha!r}; use 0 <= alpha <= 10 (γ_k ranges over [1, 2^alpha]; "
                "0 gives γ_k = 1)"
            )
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ConfigError(
                f"depgraph epochs={epochs!r}; use an integer >= 0 (0 skips sparsity learning)"
            )
        self.lam = lam
        self.alpha = alpha
        self.epochs = epochs
        self._scores: dict[str, Tensor] | None = None

    def hooks(self, ctx: PruneContext) -> list[Hook]:
        if self.lam == 0:
            return []  # plain training for `epochs`: the regulariser would add nothing
        return [GroupNormHook(ctx.structure, self.lam, self.alpha)]

    def train_optim(self, ctx: PruneContext) -> Mapping[str, Any]:
        """Fine-tuning's optimiser without weight decay: the regulariser replaces it, as in the
        reference (`weight_decay=0` while a pruner regularises)."""
        return {**ctx.finetune, "weight_decay": 0.0}

    def prepare(self, ctx: PruneContext) -> None:
        """Per-layer [C_out] maps whose group reduction is exactly ‖θ_{g,k}‖² / max_k ‖θ_{g,k}‖².

        `score_groups` sums a producer's channels per unit and averages over the L producer
        layers; so channel i of slot s (unit u, which owns c_{s,u} channels there and appears in
        k_u of the L producer slots) gets that score · L / (k_u · c_{s,u}).
        """
        modules = dict(ctx.model.named_modules())
        scores: dict[str, Tensor] = {}
        for name, n in group_norms(ctx.model, ctx.structure).items():
            sq = n.double().square()
            top = float(sq.max()) if len(sq) else 0.0
            norm = (sq / top if top > 0 else sq).float()  # the reference's normalizer="max"
            group = ctx.structure.groups[name]
            producers = group.producers
            per_slot = [p.channels_per_unit(group.size) for p in producers]  # c_{s,u}
            k = torch.stack([c > 0 for c in per_slot]).sum(0).clamp_min(1)  # [size] k_u
            for slot, c in zip(producers, per_slot, strict=True):
                share = norm * len(producers) / (k * c.clamp_min(1))  # [size]
                width = out_first(modules[slot.module]).shape[0]
                layer = scores.setdefault(slot.module, torch.zeros(width))
                layer[slot.channels] = share[slot.units]
        self._scores = scores

    def score(self, view: LayerView) -> Tensor | None:
        if self._scores is None:
            raise RuntimeError("method 'depgraph' scores before prepare(ctx) computed group norms")
        layer = self._scores.get(view.name)
        return None if layer is None else layer[view.channels]
