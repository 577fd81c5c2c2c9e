"""Compiled training (issue 26): the setting, `auto`'s rule, the eager fallback, and that compiled
training gives the same answers as eager (hooks included) without recompiling inside an epoch."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import harness.train.compile as compile_mod
from harness.config import compose
from harness.data import TensorBatches
from harness.errors import ConfigError
from harness.run.pipeline import run
from harness.runtime.device import pick_runtime
from harness.train import Hook, LoopState
from harness.train.compile import AUTO_MIN_VALUES, compile_mode, twin_of, wants_compile
from harness.train.loop import fit
from harness.train.optim import build_optimizer, build_scheduler
from tests.conftest import TinyResNet

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


class Classify:
    metric = "acc"

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": F.cross_entropy(model(x), y)}

    def evaluate(self, model: nn.Module, batches: TensorBatches) -> dict[str, float]:
        right = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
        return {"acc": 100.0 * right / batches.num_samples}


class MaskHalf(Hook):
    """Zeroes the first half of a conv's filters after every step (what re-masking methods do):
    it must act on the parameters the compiled graph reads."""

    def __init__(self, model: TinyResNet) -> None:
        self.weight = model.b1[0].weight

    def after_step(self, s: LoopState) -> None:
        with torch.no_grad():
            self.weight[: len(self.weight) // 2].zero_()


def train_tiny(mode: str, seed: int = 0, epochs: int = 2) -> tuple[TinyResNet, object]:
    """TinyResNet on 44 random 8×8 images: batches of 8 (a partial last one is dropped) and a
    validation split of 20 in batches of 8 (a partial last batch of 4)."""
    g = torch.Generator().manual_seed(123)
    x, y = torch.randn(64, 3, 8, 8, generator=g), torch.randint(0, 5, (64,), generator=g)
    train = TensorBatches((x[:44], y[:44]), 8, shuffle=True, drop_last=True, seed=seed)
    val = TensorBatches((x[44:], y[44:]), 8)
    torch.manual_seed(seed)
    model = TinyResNet()
    cfg = OmegaConf.create({"optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4})
    optimizer = build_optimizer(model.parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg, epochs=epochs, steps_per_epoch=len(train))
    result = fit(
        model, Classify(), train, epochs=epochs, optimizer=optimizer, scheduler=scheduler,
        runtime=pick_runtime("cpu", compile=mode), hooks=[MaskHalf(model)], val=val,
    )  # fmt: skip
    return model, result


def test_compile_setting_accepts_auto_and_booleans_and_names_a_bad_value():
    assert [compile_mode(v) for v in ("auto", True, False, "true", "off", None)] == [
        "auto", "on", "off", "on", "off", "off",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="compile='fast'"):
        pick_runtime("cpu", compile="fast")


def test_auto_compiles_on_cuda_and_on_cpu_only_where_the_work_repays_it():
    assert wants_compile("auto", CUDA, 1.0)
    assert not wants_compile("auto", CPU, AUTO_MIN_VALUES / 2)
    assert not wants_compile("auto", CPU, None)  # unknown work: eager
    assert wants_compile("auto", CPU, AUTO_MIN_VALUES)
    assert wants_compile("on", CPU, 1.0) and not wants_compile("off", CUDA, 1e12)
    # one CIFAR-10 epoch (45k images of 3×32×32) compiles; the digits demo (1.3k 8×8) does not
    assert wants_compile("auto", CPU, 45_000 * 3 * 32 * 32)
    assert not wants_compile("auto", CPU, 20 * 1293 * 64)

    class NoGainOnCpu(nn.Module):
        compile_on_cpu = False  # e.g. DHP's search network

    assert not wants_compile("auto", CPU, 1e12, NoGainOnCpu())
    assert wants_compile("auto", CUDA, 1.0, NoGainOnCpu()) and wants_compile(
        "on", CPU, 1, NoGainOnCpu()
    )


class _BackwardFails(torch.autograd.Function):
    """Stands in for a compiled graph whose backward does not compile (AOTAutograd compiles the
    backward lazily, at the first `backward()`, outside the twin's forward)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("C++ compile failed: cannot allocate memory\nlong compiler output")


def _forward_fails(model, **kwargs):
    def run(*args, **kw):
        raise RuntimeError("backend exploded\nlong traceback text")

    return run


def _backward_fails(model, **kwargs):
    return lambda *args, **kw: _BackwardFails.apply(model(*args, **kw))


@pytest.mark.parametrize(
    ("broken_compile", "why"),
    [
        (_forward_fails, "RuntimeError: backend exploded"),
        (_backward_fails, "RuntimeError: C++ compile failed: cannot allocate memory"),
    ],
    ids=["forward", "lazy-backward"],
)
def test_a_model_that_does_not_compile_trains_eagerly_with_one_line(
    broken_compile, why, monkeypatch, caplog
):
    monkeypatch.setattr(compile_mod.torch, "compile", broken_compile)
    monkeypatch.setattr(compile_mod, "_failed", {})
    with caplog.at_level(logging.WARNING, logger="harness.train.compile"):
        model, result = train_tiny("on")
    lines = [r.getMessage() for r in caplog.records if r.name == "harness.train.compile"]
    assert lines == [f"TinyResNet runs eagerly: torch.compile failed ({why})"]
    assert result.epochs_run == 2 and not result.compiled and twin_of(model) is None
    reference, _ = train_tiny("off")
    for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the fallback is the eager run, step for step (a failed
        # backward's step is undone: BatchNorm's running statistics included)


def tiny_run(outputs, *extra: str) -> dict:
    """A whole `prunebench run` on the 3.7k-parameter test net and 8×8 digits, in seconds."""
    return run(
        compose(
            [
                "data=digits", "model.name=test_resnet", "~model.shortcut", "train.epochs=1",
                "finetune.epochs=1", "measure.latency_repeats=1", "tracking.enabled=false",
                f"outputs={outputs}", *extra,
            ]
        )
    )  # fmt: skip


def test_the_record_says_which_mode_produced_each_number(tmp_path, monkeypatch):
    compiles = []

    def traced(model, **kwargs):  # stands in for inductor: the twin's plumbing, no compile time
        compiles.append(type(model).__name__)
        return model

    monkeypatch.setattr(compile_mod.torch, "compile", traced)
    monkeypatch.setattr(compile_mod, "_failed", {})
    on = tiny_run(tmp_path / "on", "compile=true", "method=l1")
    assert on["compile"] == "on" and compiles
    assert on["compiled_baseline"] == on["compiled_finetune"] == on["compiled_eval"] == 1.0
    assert on["compile_s"] >= 0
    n_on = len(compiles)
    off = tiny_run(tmp_path / "off", "compile=false", "method=l1")
    auto = tiny_run(tmp_path / "auto", "method=l1")  # the default: a digits run stays eager
    for record, mode in ((off, "off"), (auto, "auto")):
        assert record["compile"] == mode
        assert record["compiled_baseline"] == record["compiled_finetune"] == 0.0
        assert record["compiled_eval"] == 0.0
    assert len(compiles) == n_on  # neither `false` nor `auto` (tiny work) compiled anything
    assert off["test_metric"] == auto["test_metric"]


def test_a_run_keeps_inductors_cache_under_its_outputs_unless_the_user_chose_one(
    tmp_path, monkeypatch
):
    import os

    from harness.runtime.startup import start_process

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    start_process(compose(["data=digits", f"outputs={tmp_path}"]))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "cache" / "inductor" / "triton")
    import torch._inductor.runtime.cache_dir_utils as cache_dir_utils  # what inductor reads

    assert cache_dir_utils.cache_dir() == str(tmp_path / "cache" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    start_process(compose(["data=digits", f"outputs={tmp_path}/other"]))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


def test_a_plugin_model_that_does_not_compile_runs_to_completion_with_one_line(
    tmp_path, monkeypatch, caplog
):
    def broken_compile(model, **kwargs):
        raise RuntimeError("unsupported operator in plug-in")

    monkeypatch.setattr(compile_mod.torch, "compile", broken_compile)
    monkeypatch.setattr(compile_mod, "_failed", {})
    with caplog.at_level(logging.WARNING):
        record = tiny_run(tmp_path, "compile=true", "method=l1", "train.epochs=0")
    lines = [r.getMessage() for r in caplog.records if r.name == "harness.train.compile"]
    assert lines == [
        "TinyResNet runs eagerly: torch.compile failed (RuntimeError: unsupported operator in "
        "plug-in)"
    ]
    assert record["compiled_finetune"] == record["compiled_eval"] == 0.0
    assert record["latency_ms"] > 0 and record["test_metric"] >= 0


@pytest.mark.slow
def test_compiled_training_matches_eager_reproducibly_without_recompiles():
    eager, r_eager = train_tiny("off")
    comp, r_comp = train_tiny("on")
    again, _ = train_tiny("on")
    assert not r_eager.compiled and r_comp.compiled
    twin = twin_of(comp)
    assert twin is not None and twin.active  # no guard failure (= no recompile) in any epoch
    # one graph per (mode, grad): training steps, and validation's full batches (the partial
    # last validation batch ran eagerly instead of compiling a second shape)
    assert sorted(len(v) for v in twin._graphs.values()) == [1, 1]
    for (k, a), b, c in zip(
        comp.state_dict().items(),
        again.state_dict().values(),
        eager.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b), k  # same seed, compiled: bitwise the same
        if a.is_floating_point():  # eager vs compiled: fused kernels round differently
            torch.testing.assert_close(a, c, rtol=1e-3, atol=1e-4, msg=k)
    half = len(comp.b1[0].weight) // 2
    assert comp.b1[0].weight[:half].abs().sum() == 0  # the hook's mask held, compiled
    comp.eval()
    x = torch.randn(8, 3, 8, 8)
    with torch.no_grad():  # the eval graph reads the trained weights
        torch.testing.assert_close(twin(x), comp(x), rtol=1e-4, atol=1e-5)
