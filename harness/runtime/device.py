"""Device and precision choice: CUDA when present; bf16 autocast on CUDA, and on a CPU where a run
says it pays (`harness.runtime.precision`); channels_last wherever bf16 autocast is on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Runtime", "pick_runtime"]


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: str = "off"  # off | on | auto: see harness.train.compile
    cache_dir: str | None = None  # the run's cache folder: inductor's on-disk cache goes under it

    @property
    def precision(self) -> str:
        """How records, the baseline cache and benchmarks name it: fp32, or the autocast dtype."""
        if self.amp_dtype is None:
            return "fp32"
        names = {torch.bfloat16: "bf16", torch.float16: "fp16"}
        return names.get(self.amp_dtype, str(self.amp_dtype))

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def pick_runtime(
    device: str = "auto",
    amp: bool | None = None,
    compile: object = "off",
    cache_dir: str | None = None,
    *,
    cpu_bf16: bool = False,
) -> Runtime:
    """`device`: auto | cpu | cuda | cuda:N. `amp`: None (auto) = bf16 autocast on CUDA, and on a
    CPU when `cpu_bf16` (the run's `precision.cpu_bf16_pays`); True / False force it.
    `compile`: auto | true | false (`harness.train.compile`)."""
    from harness.train.compile import compile_mode

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from harness.errors import ConfigError

        raise ConfigError(f"device={device} requested but CUDA is not available; use device=auto")
    on_gpu = dev.type == "cuda"
    use_amp = (on_gpu or cpu_bf16) if amp is None else bool(amp)
    return Runtime(
        dev,
        torch.bfloat16 if use_amp else None,
        channels_last=on_gpu or use_amp,  # oneDNN's bf16 convolutions want it too (1.2× here)
        compile=compile_mode(compile),
        cache_dir=None if cache_dir is None else str(cache_dir),
    )


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode + no_grad for the duration, restoring the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
