"""Measurement of the physically pruned model: fvcore MACs, parameters, latency.

MACs are conv + linear multiply-accumulates (fvcore counts one fused multiply-add as one "flop");
fvcore's total (BatchNorm, pooling, upsampling included) and the ops it could not count are kept
beside them.
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.runtime.device import Runtime, eval_mode

__all__ = ["MacReport", "count_macs", "count_params", "measure_latency"]

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
            x = torch.randn(b, *input_shape, device=runtime.device)
            if runtime.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            for _ in range(warmup if net is model else max(1, warmup)):
                net(x)
            times = []
            for _ in range(repeats):
                runtime.synchronize()
                t = time.perf_counter()
                net(x)
                runtime.synchronize()  # sync: the clock reads finished GPU work
                times.append((time.perf_counter() - t) * 1e3)
            result[b] = statistics.median(times)
    return result
