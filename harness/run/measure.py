"""Measurement of the physically pruned model: fvcore MACs, parameters, latency.

MACs are conv + linear multiply-accumulates (fvcore counts one fused multiply-add as one "flop");
fvcore's total (BatchNorm, pooling, upsampling included) and the ops it could not count are kept
beside them.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.runtime.device import Runtime, eval_mode

__all__ = [
    "MacReport",
    "Timing",
    "count_macs",
    "count_params",
    "measure_latency",
    "measure_speed",
    "summarize",
    "time_call",
]

log = logging.getLogger(__name__)

_CONV_LINEAR = ("conv", "linear", "addmm", "matmul", "bmm", "einsum")


@dataclass
class MacReport:
    macs: int  # conv + linear
    macs_total: int  # everything fvcore counts
    by_operator: dict[str, int] = field(default_factory=dict)
    unsupported: dict[str, int] = field(default_factory=dict)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> MacReport:
    """fvcore count at one sample of `input_shape` (C, H, W), on CPU, in eval mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

    device = next(model.parameters()).device
    x = torch.zeros(1, *input_shape, device=device)
    with eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        by_op = dict(analysis.by_operator())
        unsupported = dict(analysis.unsupported_ops())
    macs = sum(v for k, v in by_op.items() if k in _CONV_LINEAR)
    return MacReport(int(macs), int(sum(by_op.values())), by_op, unsupported)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Timing:
    """Median of repeated timings and their spread (interquartile range), in ms."""

    median_ms: float
    spread_ms: float

    @property
    def relative_spread(self) -> float:
        return self.spread_ms / self.median_ms if self.median_ms > 0 else 0.0


def summarize(times: list[float]) -> Timing:
    """Median and interquartile range of timings in ms (the range when fewer than 4)."""
    if len(times) < 4:
        return Timing(statistics.median(times), max(times) - min(times))
    q = statistics.quantiles(times, n=4, method="inclusive")
    return Timing(statistics.median(times), q[2] - q[0])


def time_call(
    fn: Callable[[], object], runtime: Runtime, *, repeats: int = 10, warmup: int = 3
) -> Timing:
    """Time `fn()` `repeats` times after `warmup` calls; CUDA is synchronised around each call
    so the clock reads finished GPU work."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        runtime.synchronize()
        t = time.perf_counter()
        fn()
        runtime.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return summarize(times)


def _input(batch: int, input_shape: tuple[int, ...], runtime: Runtime) -> torch.Tensor:
    x = torch.randn(batch, *input_shape, device=runtime.device)
    if runtime.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    runtime: Runtime,
    *,
    batch_sizes: tuple[int, ...] = (1, 64),
    repeats: int = 20,
    warmup: int = 5,
) -> dict[int, float]:
    """Median forward latency in ms per batch size, on the run's device, after warm-up; compiled
    (one graph per batch size, built in the warm-up) when `evaluate` runs the model compiled."""
    from harness.train.compile import CompiledModel, twin_of

    result = {}
    net: nn.Module | CompiledModel = model
    if twin_of(model) is not None or runtime.compile == "on":
        net = CompiledModel(model, shapes_per_mode=len(batch_sizes))
    with eval_mode(model), runtime.autocast():
        for b in batch_sizes:
            x = _input(b, input_shape, runtime)
            result[b] = time_call(
                lambda x=x: net(x), runtime, repeats=repeats, warmup=max(1, warmup)
            ).median_ms
    return result


def measure_speed(
    models: Mapping[str, nn.Module],
    input_shape: tuple[int, ...],
    runtime: Runtime,
    *,
    batch_sizes: tuple[int, ...] = (1, 64),
    repeats: int = 20,
    warmup: int = 3,
) -> dict[str, dict[int, Timing]]:
    """Latency of several models (e.g. pruned and unpruned) in the same process, their repeats
    interleaved so that load drifting during the measurement hits every model alike.
    Returns model name → batch size → Timing."""
    out: dict[str, dict[int, Timing]] = {n: {} for n in models}
    with contextlib.ExitStack() as stack:
        for m in models.values():
            stack.enter_context(eval_mode(m))
        stack.enter_context(runtime.autocast())
        for b in batch_sizes:
            x = _input(b, input_shape, runtime)
            for m in models.values():
                for _ in range(warmup):
                    m(x)
            times: dict[str, list[float]] = {n: [] for n in models}
            for _ in range(repeats):
                for n, m in models.items():
                    one = time_call(lambda m=m, x=x: m(x), runtime, repeats=1, warmup=0)
                    times[n].append(one.median_ms)
            for n in models:
                out[n][b] = summarize(times[n])
    return out
