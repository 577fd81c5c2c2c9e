"""The CUDA code paths, exercised on CPU: bf16 autocast + channels_last through a whole run and a
DHP run (bf16 autocast exists on CPU, so dtype bugs cannot hide until a GPU is lent), and the
one-command GPU check in its tiny CPU mode (so it cannot rot)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import harness.run.pipeline as pipeline
from harness.cli.main import compose
from harness.runtime.device import Runtime

ROOT = Path(__file__).resolve().parents[2]


def gpu_like_runtime(
    device: str = "auto",
    amp: bool | None = None,
    compile: object = "off",
    cache_dir=None,
    *,
    cpu_bf16: bool = False,
) -> Runtime:
    """What pick_runtime gives on CUDA (bf16 autocast, channels_last), on the CPU, eager."""
    return Runtime(torch.device("cpu"), torch.bfloat16, channels_last=True, cache_dir=cache_dir)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["l1", "dhp"])
def test_a_run_under_bf16_autocast_and_channels_last(method, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "pick_runtime", gpu_like_runtime)
    extra = ["method.epochs=1", "method.checks_per_epoch=2"] if method == "dhp" else []
    record = pipeline.run(compose([
        "data=digits", "model=resnet20", f"method={method}", "target=0.5", "train.epochs=1",
        "finetune.epochs=1", "measure.latency_repeats=2", "tracking.enabled=false",
        f"outputs={tmp_path}", *extra,
    ]))  # fmt: skip
    if method == "dhp":  # one-sided stop: at or below the target (1 epoch may overshoot)
        assert 0.0 < record["macs_ratio"] <= 0.53
    else:
        assert abs(record["macs_ratio"] - 0.5) <= 0.03
    for key in ("val_metric", "test_metric", "latency_ms"):
        assert math.isfinite(float(record[key])), key


def test_bf16_autocast_on_cpu_runs_convs_in_bf16_and_keeps_fp32_weights():
    runtime = gpu_like_runtime()
    model = runtime.prepare(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)))
    x = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)
    with runtime.autocast():
        y = model[0](x)
        loss = model[1](y).float().square().mean()
    assert y.dtype == torch.bfloat16 and model[0].weight.dtype == torch.float32
    loss.backward()
    assert model[0].weight.grad.dtype == torch.float32


@pytest.mark.slow
def test_gpu_check_tiny_mode_writes_its_summary(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_OUT": str(out),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--tiny"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    for part in ("harness_overhead", "dhp_step", "trials_per_hour", "git:", "hardware:"):
        assert part in summary
    rows = [r for r in summary.splitlines() if r.startswith("| 1 |") or r.startswith("| 2 |")]
    assert len(rows) >= 2  # trials/hour with 1 and 2 workers
