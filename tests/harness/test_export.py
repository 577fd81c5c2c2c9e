"""ONNX export of compact models: onnxruntime's outputs equal PyTorch's (skipped without onnx)."""

from __future__ import annotations

import copy

import pytest
import torch

import harness.run.export as export
from harness.structure import Plan, apply_plan, build_structure
from tests.conftest import TINY_MODELS, randomize_bn


def _pruned(name: str):
    torch.manual_seed(0)
    in_chans = 1 if name == "concat" else 3
    model = randomize_bn(TINY_MODELS[name](in_chans=in_chans)).eval()
    structure = build_structure(model, torch.randn(1, in_chans, 8, 8))
    plan = Plan({g.name: list(range(0, g.size, 2)) for g in structure.prunable})  # every other
    return model, apply_plan(copy.deepcopy(model), structure, plan), (in_chans, 8, 8)


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_compact_models_export_and_equal_pytorch(name):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    _, compact, shape = _pruned(name)
    result = export.export_onnx(compact, shape)
    assert result.ok, result.reason
    assert result.equal and result.max_abs_diff < 1e-4
    assert result.opset >= 13


def test_onnx_record_times_both_models():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    base, compact, shape = _pruned("resnet")
    record = export.onnx_record(compact, base, shape, batch_sizes=(1, 4), repeats=2)
    assert record["onnx_equal"] is True
    for b in (1, 4):
        assert record[f"onnx_latency_ms_b{b}"] > 0 and record[f"onnx_latency_ratio_b{b}"] > 0


def test_without_onnx_the_record_says_so_in_one_line(monkeypatch):
    monkeypatch.setattr(
        export, "onnx_available", lambda: "ONNX export skipped: onnx is not installed (pip …)"
    )
    base, compact, shape = _pruned("resnet")
    record = export.onnx_record(compact, base, shape, batch_sizes=(1,), repeats=1)
    assert record == {"onnx_skipped": "ONNX export skipped: onnx is not installed (pip …)"}


def test_a_model_that_does_not_export_says_why():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")

    class Unexportable(torch.nn.Module):
        def forward(self, x):
            return torch.fft.rfft2(x).abs()  # no ONNX symbolic in the TorchScript exporter

    result = export.export_onnx(Unexportable(), (3, 8, 8))
    assert not result.ok and "does not export" in result.reason and "\n" not in result.reason
