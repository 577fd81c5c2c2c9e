"""DHP's search as harness hooks: proximal step, MAC check and stop rule, and the γ rule.

The search trains backbone + hypernetworks + latents on the task loss only (Li et al., ECCV 2020,
§3.3); the ℓ1 sparsity term acts only through the proximal step. After every optimizer step, each
prunable latent vector is soft-thresholded,

    z ← sign(z) · max(|z| − lr·γ, 0),      lr = the LR of the step just taken,

except that a vector is skipped once it has ≤ `min_channels` (4) entries with |z| ≥ T. (We also
skip the rare step that would take a vector from more than 4 to fewer than 4 entries ≥ T at once,
so the proximal step itself never breaks the floor.) Every `check_every` steps the masks keep
|z_i| ≥ min(T, k-th largest |z|), k = min(4, size); `CostModel.ratio` gives the exact conv+linear
MAC ratio of the network they leave (the harness's convention: no BatchNorm, no activations); the
search stops at the first check with ratio ≤ target + stop_limit (one-sided), or at the epoch cap.
Once a check projects the stop within two check intervals, the search checks after every step;
the latents of the last check above the stop band are kept (`DHPSearch.above`), so a last step
that still overshoots the landing band can step back to them (`DHPSearch.step_back`, DHP.search).

γ is per iteration, so the paper's values (2e-4 for ResNet-20, …) silently assume CIFAR's 782
iterations per epoch; on a dataset 40× smaller they never reach the target. `GammaController` has
two modes:

- `paper`: γ fixed.
- `budget`: γ is set from the iteration budget and adapted from the MAC-ratio trajectory.
  Let S = Σ lr·γ be the cumulative shrink applied so far and L(t) = Σ_{τ<t} lr_τ the cumulative LR
  of the search's own schedule (known in advance from the scheduler, step drops included).
  1. Prior: the shrink needed to reach a target t is S*(t) = s½ · q(t)/q(½), q(t) = Φ⁻¹(1 − √t/2)
     (the |N(0, 1)| quantile of the channel fraction 1 − √t a uniform cut removes; s½ = 0.5 is the
     shrink measured for 50 % MACs). Initial γ = S*(target) / L(aim · budget), aim = 0.65.
  2. At each check (step t, ratio r > target): estimate the ratio's slope against the shrink,
     κ = −dr/dS, as the secant over the most recent third of the shrink (or the whole history, or
     the prior's (1 − target)/S*, while less than 2 % of MACs have gone); the shrink still needed is
     (r − target)/κ, and the γ that delivers it by the goal step t_g = max(aim · budget, t + h)
     (h = 5 % of the budget) is γ* = (r − target) / (κ · (L(t_g) − L(t))).
  3. Move γ towards γ* geometrically, by the fraction Δt/h of the way per check (Δt = steps
     since the last check) and by at most ×/÷ 4 per horizon h: γ ← γ · (γ*/γ)^{min(1, Δt/h)}.
  So γ rises while the projected arrival lies beyond the aim (slow start, revived channels), and
  falls when the ratio is dropping fast enough to overshoot; frequent checks keep the last step
  below the stop limit.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from harness.errors import CheckpointError, ConfigError, SearchDivergedError
from harness.runtime.atomic import atomic_write, clean_stale_temps
from harness.train import FitCheckpoint, Hook, LoopState
from methods.dhp.latents import with_ties

if TYPE_CHECKING:
    from harness.structure import CostModel
    from methods.dhp.compact import SearchNet

__all__ = [
    "DHPSearch",
    "GammaController",
    "SearchCheckpoint",
    "keep_masks",
    "lr_schedule",
    "proximal_step",
    "shrink_prior",
]

log = logging.getLogger(__name__)

GAMMA_MODES = ("paper", "budget")


@torch.no_grad()
def proximal_step(
    params: Sequence[Tensor],
    shrink: float,
    *,
    threshold: float,
    min_channels: int = 4,
    segments: Tensor | None = None,
) -> None:
    """Soft-threshold every vector of `params` in place by `shrink` (= lr·γ), on the device.

    A vector is left alone when it has ≤ `min_channels` entries with |z| ≥ `threshold`, or when
    fewer than `min_channels` would stay ≥ `threshold` after the shrink. One fused pass over the
    concatenation, no host sync. `segments` ([total] vector index per entry) may be precomputed.
    """
    if not params or shrink <= 0:
        return
    sizes = [p.numel() for p in params]
    flat = torch.cat([p.reshape(-1) for p in params])  # [total]
    if segments is None:
        segments = torch.repeat_interleave(
            torch.arange(len(params), device=flat.device), torch.tensor(sizes, device=flat.device)
        )
    mag = flat.abs()
    above = torch.zeros(len(params), device=flat.device).index_add_(
        0, segments, (mag >= threshold).float()
    )
    stays = torch.zeros(len(params), device=flat.device).index_add_(
        0, segments, (mag >= threshold + shrink).float()
    )
    active = ((above > min_channels) & (stays >= min_channels))[segments]
    new = torch.where(active, flat.sign() * (mag - shrink).clamp_min(0), flat)
    for p, chunk in zip(params, new.split(sizes), strict=True):
        p.copy_(chunk.view_as(p))


def keep_masks(
    vectors: dict[str, Tensor], *, threshold: float, min_channels: int = 4
) -> dict[str, Tensor]:
    """Group → [size] bool, True where |z_i| ≥ min(T, k-th largest |z|), k = min(4, size)."""
    out = {}
    for name, z in vectors.items():
        mag = z.detach().abs()
        k = min(min_channels, mag.numel())
        kth = float(mag.topk(k).values[-1]) if k > 0 else 0.0
        out[name] = mag >= min(threshold, kth)
    return out


def shrink_prior(target: float, shrink_at_half: float = 0.5) -> float:
    """Cumulative shrink Σ lr·γ expected to reach `target` (see the module docstring)."""

    def q(t: float) -> float:
        return NormalDist().inv_cdf(1.0 - math.sqrt(min(max(t, 1e-6), 1.0)) / 2.0)

    return shrink_at_half * q(target) / q(0.5)


def lr_schedule(s: LoopState) -> Callable[[int], float]:
    """LR used by optimizer step t (0-based). Exact for LambdaLR (the harness's schedules);
    any other scheduler is taken as constant at the current LR."""
    sched = s.scheduler
    lambdas = getattr(sched, "lr_lambdas", None)
    if lambdas and callable(lambdas[0]):
        base = float(sched.base_lrs[0])
        fn = lambdas[0]
        return lambda t: base * float(fn(t))
    lr = s.lr
    return lambda t: lr


class GammaController:
    """γ per iteration: fixed (`paper`) or budget-aware (`budget`, see the module docstring)."""

    def __init__(
        self,
        mode: str,
        gamma: float,
        target: float,
        *,
        aim: float = 0.65,
        shrink_at_half: float = 0.5,
        horizon: float = 0.05,
        max_change: float = 4.0,
    ) -> None:
        if mode not in GAMMA_MODES:
            known = ", ".join(sorted(GAMMA_MODES))
            raise ConfigError(f"unknown gamma_mode '{mode}'; known: {known}")
        if not 0.0 < aim <= 1.0:
            raise ConfigError(f"aim={aim} must be a fraction of the search budget in (0, 1]")
        self.mode, self.gamma, self.target = mode, float(gamma), float(target)
        self.aim, self.shrink_at_half = aim, shrink_at_half
        self.horizon, self.max_change = horizon, max_change
        self.initial_gamma: float | None = None
        self.history: list[list[float]] = []  # [step, shrink, ratio] at each check
        self._cum: list[float] = [0.0]
        self.total = 0

    def setup(self, lr_at: Callable[[int], float], total_steps: int) -> None:
        """Called before the search (and again on resume): the LR table of the whole budget."""
        self.total = max(1, total_steps)
        if self.mode == "budget":  # O(budget) floats: 78 k for 100 CIFAR epochs
            self._cum = [0.0, *itertools.accumulate(lr_at(t) for t in range(self.total))]
        if self.initial_gamma is None:  # a fresh search, not a resumed one
            if self.mode == "budget":
                prior = shrink_prior(self.target, self.shrink_at_half)
                self.gamma = prior / max(self._lr_sum(0, self.aim_step), 1e-12)
            self.initial_gamma = self.gamma

    @property
    def aim_step(self) -> int:
        return max(1, math.ceil(self.aim * self.total))

    def _lr_sum(self, start: int, end: int) -> float:
        end = min(max(end, start), self.total)
        return self._cum[end] - self._cum[min(start, self.total)]

    def _slope(self, shrink: float, ratio: float) -> float:
        """κ = −dr/dS: recent secant, else whole-history secant, else the prior's."""
        prior = (1.0 - self.target) / max(shrink_prior(self.target, self.shrink_at_half), 1e-9)
        if 1.0 - ratio < 0.02 or shrink <= 0:
            return prior
        shrinks = [h[1] for h in self.history]
        i = bisect.bisect_left(shrinks, shrink * 2.0 / 3.0)
        s0, r0 = (self.history[i][1], self.history[i][2]) if i < len(self.history) else (0.0, 1.0)
        if shrink - s0 > 0 and r0 - ratio >= 0.01:
            return (r0 - ratio) / (shrink - s0)
        slope = (1.0 - ratio) / shrink  # whole history (the recent part stalled)
        return max(slope * 0.5, prior * 0.05)  # a stall halves it: γ has to rise

    def update(self, step: int, shrink: float, ratio: float, interval: int) -> None:
        """Called at each check that does not stop the search."""
        self.history.append([float(step), float(shrink), float(ratio)])
        if self.mode != "budget" or ratio <= self.target:
            return
        h = max(1, round(self.horizon * self.total))
        goal = max(self.aim_step, min(self.total, step + h))
        lr_left = self._lr_sum(step, goal)
        if lr_left <= 0:
            return
        want = (ratio - self.target) / (self._slope(shrink, ratio) * lr_left)
        change = min(max(want / self.gamma, 1.0 / self.max_change), self.max_change)
        self.gamma *= change ** min(1.0, interval / h)

    def state_dict(self) -> dict[str, Any]:
        return {
            "gamma": self.gamma,
            "initial_gamma": self.initial_gamma,
            "history": [list(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gamma = float(state["gamma"])
        self.initial_gamma = state["initial_gamma"]
        self.history = [list(h) for h in state["history"]]


class DHPSearch(Hook):
    """Proximal step after every optimizer step; MAC check, logging and stop every N steps."""

    def __init__(
        self,
        net: SearchNet,
        prunable: Sequence[str],
        cost: CostModel,
        gamma: GammaController,
        *,
        target: float,
        threshold: float,
        stop_limit: float,
        min_channels: int = 4,
        check_every: int | None = None,
        checks_per_epoch: int = 8,
        log_metrics: Callable[[dict[str, float], int | None], None] | None = None,
        ties: Mapping[str, str] | None = None,
    ) -> None:
        self.latents = net.latents
        self.ties = dict(ties or {})  # group → owner whose latent (and mask) it shares
        self.prunable = list(prunable)
        self.cost, self.controller = cost, gamma
        self.ratio_name = f"{getattr(cost, 'kind', 'macs')}_ratio"  # landing.StopCost: or latency
        self.target, self.threshold, self.stop_limit = target, threshold, stop_limit
        self.min_channels = min_channels
        self._check_every_cfg, self.checks_per_epoch = check_every, checks_per_epoch
        self.check_every = check_every or 1
        self.log_metrics = log_metrics or (lambda m, step=None: None)
        self.shrink = 0.0  # Σ lr·γ applied so far
        self.last_check = 0
        self.ratio: float | None = None
        self.checks = 0
        self._segments: Tensor | None = None
        self._lr_at: Callable[[int], float] = lambda t: 0.0
        #: the latents (group → signed CPU vector) at the last check above the stop band and that
        #: check's ratio: what an overshooting last interval steps back to (`step_back`)
        self.above: dict[str, Tensor] | None = None
        self.above_ratio = 1.0
        self.near = False  # a check projected the stop within 2 intervals: check every step

    # ------------------------------------------------------------------ hook API
    def before_fit(self, s: LoopState) -> None:
        self.check_every = self._check_every_cfg or max(
            1, s.steps_per_epoch // max(1, self.checks_per_epoch)
        )
        self._lr_at = lr_schedule(s)
        self.controller.setup(self._lr_at, s.epochs * s.steps_per_epoch)
        params = self.params()
        if params:
            sizes = torch.tensor([p.numel() for p in params], device=params[0].device)
            self._segments = torch.repeat_interleave(
                torch.arange(len(params), device=params[0].device), sizes
            )
        if self.above is None:  # a fresh search: the initial latents are the first state above
            vectors = self.vectors()
            self.above, self.above_ratio = vectors, self.cost.ratio(self.masks_of(vectors))
        log.info(
            "dhp search: %d prunable latent vectors, γ=%.3g (%s), T=%g, check every %d steps, "
            "target %.3f + %.3f",
            len(params), self.controller.gamma, self.controller.mode, self.threshold,
            self.check_every, self.target, self.stop_limit,
        )  # fmt: skip

    def after_step(self, s: LoopState) -> None:
        shrink = self._lr_at(s.step - 1) * self.controller.gamma
        proximal_step(
            self.params(),
            shrink,
            threshold=self.threshold,
            min_channels=self.min_channels,
            segments=self._segments,
        )
        self.shrink += shrink
        if s.step % self.check_every == 0 or self.near:
            self.check(s)

    def state_dict(self) -> dict[str, Any]:
        return {
            "shrink": self.shrink,
            "last_check": self.last_check,
            "checks": self.checks,
            "ratio": self.ratio,
            "controller": self.controller.state_dict(),
            "above": self.above,
            "above_ratio": self.above_ratio,
            "near": self.near,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shrink = float(state["shrink"])
        self.last_check, self.checks = int(state["last_check"]), int(state["checks"])
        self.ratio = state["ratio"]
        self.controller.load_state_dict(state["controller"])
        self.above = state.get("above")
        self.above_ratio = float(state.get("above_ratio", 1.0))
        self.near = bool(state.get("near", False))

    # ------------------------------------------------------------------ the check
    def params(self) -> list[Tensor]:
        return [self.latents[g] for g in self.prunable]

    def vectors(self, step: int | None = None) -> dict[str, Tensor]:
        """Group → signed latent vector on the CPU (one host sync), prunable groups only.

        Non-finite latents mean the search diverged: a NaN compares false with every threshold,
        so it would silently remove the whole group; refuse instead."""
        params = self.params()
        if not params:
            return {}
        flat = torch.cat([p.detach().reshape(-1) for p in params]).float().cpu()  # sync: check
        vectors = dict(zip(self.prunable, flat.split([p.numel() for p in params]), strict=True))
        bad = [g for g, v in vectors.items() if not bool(torch.isfinite(v).all())]
        if bad:
            at = "" if step is None else f" at step {step}"
            raise SearchDivergedError(
                f"DHP search diverged{at}: the latent vectors of {len(bad)} of {len(vectors)} "
                f"groups are NaN/inf (e.g. {', '.join(bad[:3])}); lower method.search_lr "
                "or the sparsity strength (method.gamma / method.aim)"
            )
        return vectors

    def masks_of(self, vectors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Group → [size] bool removed-mask of `vectors`, tied groups included (they follow
        their owner)."""
        keep = keep_masks(dict(vectors), threshold=self.threshold, min_channels=self.min_channels)
        return with_ties({g: ~k for g, k in keep.items()}, self.ties)

    def masks(self, step: int | None = None) -> dict[str, Tensor]:
        """The removed-masks of the current latents (see `vectors`, `masks_of`)."""
        return self.masks_of(self.vectors(step))

    @torch.no_grad()
    def step_back(self) -> float:
        """Put the latents of the last check above the stop band back (the backbone and the
        hypernetworks stay as they are: at most one check interval later) and return that
        check's MAC ratio. Used when the last interval overshot the target's landing band."""
        for g, v in (self.above or {}).items():
            p = self.latents[g]
            p.copy_(v.to(device=p.device, dtype=p.dtype).view_as(p))
        return self.above_ratio

    def check(self, s: LoopState) -> float:
        vectors = self.vectors(s.step)
        removed = self.masks_of(vectors)
        ratio = self.cost.ratio(removed)
        previous = self.ratio if self.ratio is not None else self.above_ratio
        self.ratio, self.checks = ratio, self.checks + 1
        interval, self.last_check = s.step - self.last_check, s.step
        metrics = {
            f"dhp/{self.ratio_name}": ratio,
            "dhp/gamma": self.controller.gamma,
            "dhp/shrink": self.shrink,
            "dhp/lr": self._lr_at(s.step - 1),
        }
        if s.loss is not None:
            metrics["dhp/loss"] = float(s.loss)  # sync: at checks only
        for g, r in removed.items():
            if g not in self.ties:
                metrics[f"dhp/units/{g}"] = float((~r).sum())
        self.log_metrics(metrics, s.step)
        if ratio <= self.target + self.stop_limit:
            s.stop_reason = f"{self.ratio_name}<=target+{self.stop_limit:g}"
            log.info("dhp: %s %.4f at step %d ≤ %.4f: stop", self.ratio_name, ratio, s.step,
                     self.target + self.stop_limit)  # fmt: skip
        else:
            self.controller.update(s.step, self.shrink, ratio, interval)
            self.above, self.above_ratio = vectors, ratio
            # near the stop, check after every step: one check interval of a fast-falling ratio
            # would otherwise carry the search well below the target
            stop_at = self.target + self.stop_limit
            self.near = self.near or ratio - stop_at <= 2.0 * max(previous - ratio, 0.0)
        return ratio


class SearchCheckpoint(Hook):
    """Writes everything a resumed search needs at each epoch end, atomically.

    The fit's `FitCheckpoint` (model: backbone + hypernetworks + latents, optimizer, scheduler,
    loop position, the batch stream's generator) and the DHP hook's state: a resumed search
    repeats the same steps.
    """

    def __init__(self, path: str | Path, search: DHPSearch, meta: dict[str, Any]) -> None:
        self.path, self.search, self.meta = Path(path), search, meta
        clean_stale_temps(self.path.parent)  # temp files of searches killed mid-write

    def after_epoch(self, s: LoopState) -> None:
        state = {
            "meta": self.meta,
            **FitCheckpoint.of(s).to_dict(),
            "dhp": self.search.state_dict(),
        }
        # atomic, under a temp name of its own: a crash leaves the previous checkpoint, and two
        # searches writing one checkpoint_dir never share a temp file
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))

    @staticmethod
    def load(path: str | Path, meta: dict[str, Any]) -> tuple[FitCheckpoint, dict[str, Any]]:
        """Read a checkpoint written for the same search (`meta` must match): where the fit
        resumes and the DHP hook's state."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"corrupt or unsafe DHP search checkpoint {path} ({type(e).__name__}: {reason}); "
                "delete it (the search restarts) or point checkpoint_dir elsewhere"
            ) from e
        if not isinstance(state, dict):
            raise CheckpointError(
                f"DHP search checkpoint {path} holds a {type(state).__name__}, not a checkpoint; "
                "delete it or point checkpoint_dir elsewhere"
            )
        if state.get("meta") != meta:
            raise CheckpointError(
                f"DHP search checkpoint {path} was written for {state.get('meta')}, "
                f"not for this search {meta}; delete it or point checkpoint_dir elsewhere"
            )
        try:
            return FitCheckpoint.from_dict(state), state["dhp"]
        except (CheckpointError, KeyError) as e:
            raise CheckpointError(
                f"DHP search checkpoint {path} is incomplete ({e}); delete it (the search "
                "restarts) or point checkpoint_dir elsewhere"
            ) from e
