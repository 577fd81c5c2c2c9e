"""A deployable artifact, timed where it would run: ONNX export checked and timed in onnxruntime.

Optional (`pip install prunebench[onnx]`): without onnx and onnxruntime, `onnx_record` says so in
one line and returns no numbers. The compact model is exported on CPU in float32 with a dynamic
batch (TorchScript exporter, opset = the installed onnx's newest that the exporter supports), run
in onnxruntime's CPU provider on the same random batch as PyTorch, and counted equal when every
output is within `atol` + `rtol`·|reference|. Models that do not export say why in one line.
"""

from __future__ import annotations

import copy
import io
import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.run.measure import Timing, summarize

__all__ = ["ExportResult", "export_onnx", "onnx_available", "onnx_record"]

log = logging.getLogger(__name__)

#: the newest opset the TorchScript exporter writes
EXPORTER_MAX_OPSET = 20


def onnx_available() -> str:
    """'' when onnx and onnxruntime import, else why not (one line)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"ONNX export skipped: {e.name} is not installed (pip install prunebench[onnx])"
    return ""


@dataclass
class ExportResult:
    ok: bool
    reason: str = ""  # why not, one line
    opset: int = 0
    max_abs_diff: float = float("nan")
    equal: bool = False
    data: bytes = b""

    def session(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        return ort.InferenceSession(self.data, options, providers=["CPUExecutionProvider"])


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ExportResult:
    """Export a copy of `model` (CPU, float32, eval) and compare onnxruntime's output with
    PyTorch's on one random batch of 2."""
    why = onnx_available()
    if why:
        return ExportResult(False, why)
    import onnx

    opset = min(onnx.defs.onnx_opset_version(), EXPORTER_MAX_OPSET)
    cpu = copy.deepcopy(model).cpu().float().eval()
    cpu = cpu.to(memory_format=torch.contiguous_format)
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                cpu, (x,), buf, dynamo=False, opset_version=opset, input_names=["x"],
                dynamic_axes={"x": {0: "batch"}},
            )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - any exporter failure is the finding, in one line
        first = str(e).splitlines()[0] if str(e) else ""
        return ExportResult(False, f"{type(model).__name__} does not export: {first}"[:300])
    result = ExportResult(True, opset=opset, data=buf.getvalue())
    with torch.no_grad():
        ref = cpu(x)
    refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    got = result.session().run(None, {"x": x.numpy()})
    diffs, equal = [], True
    for r, g in zip(refs, got, strict=True):
        g = torch.from_numpy(g)
        diffs.append(float((r - g).abs().max()) if r.numel() else 0.0)
        equal &= r.shape == g.shape and bool(torch.allclose(r, g, atol=atol, rtol=rtol))
    result.max_abs_diff, result.equal = max(diffs), equal
    return result


def _time_sessions(
    results: list[ExportResult], x: torch.Tensor, repeats: int, warmup: int = 3
) -> list[Timing]:
    """Each session's latency on `x`, the repeats interleaved (load drift hits all alike)."""
    sessions, feed = [r.session() for r in results], {"x": x.numpy()}
    for s in sessions:
        for _ in range(warmup):
            s.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(repeats):
        for s, t in zip(sessions, times, strict=True):
            start = time.perf_counter()
            s.run(None, feed)
            t.append((time.perf_counter() - start) * 1e3)
    return [summarize(t) for t in times]


def onnx_record(
    model: nn.Module,
    base_model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batch_sizes: tuple[int, ...],
    repeats: int,
) -> dict[str, Any]:
    """`onnx_*` record keys: export check of the compact model, and onnxruntime CPU latency of
    it and of the unpruned model at each batch (median, spread, ratio); `onnx_skipped` (one
    line) when onnx is missing or a model does not export."""
    pruned = export_onnx(model, input_shape)
    if not pruned.ok:
        log.warning("%s", pruned.reason)
        return {"onnx_skipped": pruned.reason}
    base = export_onnx(base_model, input_shape)
    if not base.ok:
        return {"onnx_skipped": base.reason}
    out: dict[str, Any] = {
        "onnx_opset": pruned.opset,
        "onnx_max_abs_diff": pruned.max_abs_diff,
        "onnx_equal": pruned.equal,
    }
    for b in batch_sizes:
        x = torch.randn(b, *input_shape)
        p, q = _time_sessions([pruned, base], x, repeats)
        out[f"onnx_latency_ms_b{b}"] = p.median_ms
        out[f"onnx_latency_ms_b{b}_spread"] = p.spread_ms
        out[f"onnx_latency_ms_b{b}_base"] = q.median_ms
        out[f"onnx_latency_ratio_b{b}"] = p.median_ms / q.median_ms
    return out
