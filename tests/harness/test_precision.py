"""Auto precision (issue 26): bf16 autocast on a CPU only where it pays (native bf16, images at
least CIFAR-sized, a task whose metric bf16 does not round), decided once per run from its
configuration; the record names it and the baseline cache keeps precisions apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import harness.runtime.precision as precision
from harness.config import compose
from harness.registry import TASKS
from harness.run.baseline import baseline_key
from harness.run.pipeline import run, run_runtime
from harness.runtime.device import pick_runtime
from harness.runtime.precision import AUTO_BF16_MIN_VALUES, cpu_bf16_pays

CIFAR = (3, 32, 32)


@pytest.fixture
def native(monkeypatch):
    """Pretend the CPU does (True) or does not (False) multiply bf16 in hardware."""

    def set_native(value: bool) -> None:
        monkeypatch.setattr(precision, "native_bf16_cpu", lambda: value)

    return set_native


def test_bf16_pays_on_a_cpu_only_for_large_images_of_a_willing_task_on_native_hardware(native):
    native(True)
    assert cpu_bf16_pays(True, CIFAR)
    assert cpu_bf16_pays(True, (3, 224, 224))
    assert not cpu_bf16_pays(True, (1, 8, 8))  # digits: overhead-bound, the casts only cost
    assert not cpu_bf16_pays(True, (3, 31, 32))  # just below a CIFAR image
    assert AUTO_BF16_MIN_VALUES == 3 * 32 * 32
    assert not cpu_bf16_pays(False, CIFAR)  # restoration: PSNR reads the rounded pixels
    native(False)
    assert not cpu_bf16_pays(True, CIFAR)  # emulated bf16 is slower than fp32


def test_the_amp_setting_overrides_auto_and_bf16_brings_channels_last():
    auto = pick_runtime("cpu", None, cpu_bf16=True)
    assert auto.amp_dtype == torch.bfloat16 and auto.channels_last
    fp32 = pick_runtime("cpu", None, cpu_bf16=False)
    assert fp32.amp_dtype is None and not fp32.channels_last
    assert pick_runtime("cpu", False, cpu_bf16=True).amp_dtype is None  # amp=false: fp32
    forced = pick_runtime("cpu", True)
    assert forced.amp_dtype == torch.bfloat16 and forced.channels_last  # amp=true: bf16
    assert [r.precision for r in (auto, fp32)] == ["bf16", "fp32"]


@pytest.mark.parametrize(
    ("overrides", "native_cpu", "want"),
    [
        (["data=cifar10"], True, "bf16"),
        (["data=cifar10"], False, "fp32"),
        (["data=cifar10", "amp=false"], True, "fp32"),
        (["data=digits"], True, "fp32"),
        (["data=digits", "amp=true"], False, "bf16"),
        (["task=denoise"], True, "fp32"),
        (["task=sr"], True, "fp32"),
    ],
)
def test_a_run_picks_its_precision_from_its_configuration(native, overrides, native_cpu, want):
    native(native_cpu)
    cfg = compose(["device=cpu", *overrides])
    runtime = run_runtime(cfg, TASKS.get(cfg.task.name)(cfg.task))
    assert runtime.precision == want


def test_baselines_of_different_precisions_never_share_a_cache_entry():
    cfg = compose(["data=digits"])
    assert baseline_key(cfg) == baseline_key(cfg, "fp32")  # fp32 keys are the old keys
    assert baseline_key(cfg, "bf16") != baseline_key(cfg, "fp32")


def _tiny_cifar_npz(path) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 255, (100, 32, 32, 3), dtype=np.uint8),
        y_train=np.arange(100) % 10,
        x_test=rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8),
        y_test=np.arange(20) % 10,
    )


@pytest.mark.slow
def test_a_cifar_sized_run_trains_in_bf16_where_it_pays_and_keeps_fp32_baselines_apart(
    native, tmp_path
):
    native(True)
    data = tmp_path / "tiny.npz"
    _tiny_cifar_npz(data)
    common = [
        "data=npz", f"data.path={data}", "model=resnet20", "method=l1", "target=0.5",
        "train.epochs=1", "finetune.epochs=1", "measure.latency=false", "tracking.enabled=false",
        f"outputs={tmp_path}/out", "device=cpu",
    ]  # fmt: skip
    bf16 = run(compose(common))
    fp32 = run(compose([*common, "amp=false"]))
    assert (bf16["precision"], fp32["precision"]) == ("bf16", "fp32")
    assert bf16["macs_ratio"] == pytest.approx(fp32["macs_ratio"])  # the same cut
    baselines = sorted(p.name for p in (tmp_path / "out" / "cache" / "baselines").glob("*.pt"))
    assert len(baselines) == 2, baselines  # one per precision: neither loaded the other's
