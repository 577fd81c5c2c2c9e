"""Compiled training and evaluation: a model's `torch.compile` twin, used where it pays.

Why: the nets every run trains are small convolutional nets, which eager PyTorch runs far below
the hardware's speed (on a 2-core CPU `torch.compile` trains ResNet-20 1.3–1.5× faster,
results/benchmarks/compile_cpu_profile.txt; on GPUs small nets are launch-bound). Compilation
costs tens of seconds per model shape on a CPU, so `compile: auto` compiles a training phase only
when its planned work is large enough to win that back (see `wants_compile`).

The twin shares the model's parameters and buffers (`torch.compile` wraps the module, it does not
copy it), so optimizers, hooks (DHP's proximal step, masks, regularisers) and checkpoints keep
working on the original module. Shapes are static (`dynamic=False`): the twin compiles one graph
per (train/eval, grad on/off) for the first input shape it sees there, and runs any other shape
(a last partial batch, a differently sized test image) eagerly, so a recompile never happens
inside an epoch; an unexpected guard failure (something the graph depends on changed) switches
the twin to eager instead of recompiling. A model or plug-in that does not compile runs eagerly
with one warning line saying why; nothing fails because of compilation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from harness.runtime.startup import use_compile_cache

__all__ = [
    "AUTO_MIN_VALUES",
    "CompiledModel",
    "compile_mode",
    "compile_seconds",
    "compiled_phases",
    "count_phase",
    "forward_for",
    "twin_of",
    "wants_compile",
]

log = logging.getLogger(__name__)

#: `compile: auto` on a CPU compiles a training phase whose planned input values (steps × batch
#: × values per input image) reach this: ≈ 33k CIFAR images (0.72 of a CIFAR-10 epoch), above
#: the break-even of ResNet-20 with a cold inductor cache measured in
#: results/benchmarks/compile_cpu.txt (0.53–0.75 epochs; a warm cache repays sooner)
AUTO_MIN_VALUES = 1.0e8
#: dynamo's per-code-object cache: every model instance of one class and each (mode, shape) adds
#: an entry; a run (baseline, pruned model, latency shapes) stays far below this
_RECOMPILE_LIMIT = 64
_ATTR = "_prunebench_compiled"
_total_compile_s = 0.0
_failed: dict[type, str] = {}  # model class → why it did not compile: said once per process
_phases = {"compiled": 0, "eager": 0}  # training phases (`fit` calls) of this process, by mode


def compile_mode(value: Any) -> str:
    """The `compile` setting as one of off | on | auto (YAML booleans accepted)."""
    from harness.errors import ConfigError

    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "off"
    mode = str(value).lower()
    aliases = {"true": "on", "false": "off", "on": "on", "off": "off", "auto": "auto"}
    if mode not in aliases:
        raise ConfigError(f"compile={value!r} is not one of auto, true, false")
    return aliases[mode]


def wants_compile(
    mode: str, device: torch.device, planned_values: float | None, model: nn.Module | None = None
) -> bool:
    """Whether a training phase compiles: `on` always, `off` never; `auto` always on CUDA (compile
    takes seconds there and small nets are launch-bound) and on a CPU when the phase's planned
    input values (None: unknown) reach AUTO_MIN_VALUES, where the speed-up repays the compile,
    unless the model's class says compiling does not pay on a CPU (`compile_on_cpu = False`)."""
    if mode == "on":
        return True
    if mode != "auto":
        return False
    if device.type == "cuda":
        return True
    if model is not None and not getattr(type(model), "compile_on_cpu", True):
        return False
    return planned_values is not None and planned_values >= AUTO_MIN_VALUES


def compile_seconds() -> float:
    """Seconds this process has spent in first (compiling) calls of compiled twins."""
    return _total_compile_s


def count_phase(compiled: bool) -> None:
    """`fit` notes each training phase's mode (a search method's inner phase is seen this way)."""
    _phases["compiled" if compiled else "eager"] += 1


def compiled_phases() -> int:
    """Training phases this process has run compiled."""
    return _phases["compiled"]


def _signature(model: nn.Module) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(p.shape) for p in model.parameters())


def _none() -> None:
    return None


class CompiledModel:
    """`model` called through its compiled twin where the input shape has a graph, else eagerly.

    Attribute access goes to the original module, so a task or hook can treat this as the model.
    """

    def __init__(self, model: nn.Module, *, shapes_per_mode: int = 1, name: str = "") -> None:
        self.model = model
        self.name = name or type(model).__name__
        self.shapes_per_mode = shapes_per_mode
        self.signature = _signature(model)
        self.failed: str | None = None
        #: a training graph's backward compiles at its first `backward()`, outside `__call__`;
        #: the loop sets this once that went through (harness/train/loop.py)
        self.backward_compiled = False
        self.compile_s = 0.0
        self._graphs: dict[tuple[bool, bool], set[tuple]] = {}
        self._opt: Callable[..., Any] | None = None
        if type(model) in _failed:  # its class failed before (e.g. the pruned twin): said once
            self.failed = _failed[type(model)]
            return
        try:
            limit = getattr(torch._dynamo.config, "recompile_limit", None)
            if limit is not None and limit < _RECOMPILE_LIMIT:
                torch._dynamo.config.recompile_limit = _RECOMPILE_LIMIT
            self._opt = torch.compile(model, dynamic=False)
        except Exception as e:  # noqa: BLE001 - any failure means: run eagerly
            self.give_up(e)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["model"], name)

    def __reduce__(self) -> tuple:  # a pickled or deep-copied model carries no twin
        return (_none, ())

    def __deepcopy__(self, memo: dict) -> None:
        return None

    @property
    def active(self) -> bool:
        """True while the compiled graphs are in use (no fallback to eager happened)."""
        return self.failed is None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed is not None or self._opt is None:
            return self.model(*args, **kwargs)
        key = tuple(
            (tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else type(a)
            for a in (*args, *kwargs.values())
        )
        graphs = self._graphs.setdefault((self.model.training, torch.is_grad_enabled()), set())
        if key in graphs:
            try:
                with torch.compiler.set_stance("fail_on_recompile"):
                    return self._opt(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - a guard failed or the graph broke: eager
                self.give_up(e)
                return self.model(*args, **kwargs)
        if len(graphs) >= self.shapes_per_mode:
            return self.model(*args, **kwargs)  # another shape: eager, never a recompile
        global _total_compile_s
        t = time.perf_counter()
        try:
            out = self._opt(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the model does not compile: eager
            self.give_up(e)
            return self.model(*args, **kwargs)
        dt = time.perf_counter() - t
        self.compile_s += dt
        _total_compile_s += dt
        graphs.add(key)
        log.debug("compiled %s for %s in %.1f s", self.name, key, dt)
        return out

    def give_up(self, e: BaseException) -> None:
        """Run eagerly from now on, saying why once."""
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        self.failed = f"{type(e).__name__}: {first}"
        _failed[type(self.model)] = self.failed
        log.warning("%s runs eagerly: torch.compile failed (%s)", self.name, self.failed)


def twin_of(model: nn.Module) -> CompiledModel | None:
    """The model's live compiled twin, if it has one for its current shapes (a pruned model's
    old twin no longer applies)."""
    twin = model.__dict__.get(_ATTR)
    if isinstance(twin, CompiledModel) and twin.active and twin.signature == _signature(model):
        return twin
    return None


def compiled(model: nn.Module, cache_dir: str | None = None, name: str = "") -> CompiledModel:
    """The model's compiled twin, made once per model and shape signature."""
    twin = model.__dict__.get(_ATTR)
    if isinstance(twin, CompiledModel) and twin.signature == _signature(model):
        return twin
    use_compile_cache(cache_dir)
    twin = CompiledModel(model, name=name)
    model.__dict__[_ATTR] = twin
    return twin


def forward_for(
    model: nn.Module,
    mode: str,
    device: torch.device,
    planned_values: float | None,
    cache_dir: str | None = None,
    name: str = "",
) -> nn.Module | CompiledModel:
    """What a training phase calls: the compiled twin when `wants_compile`, else the model."""
    if wants_compile(mode, device, planned_values, model):
        twin = compiled(model, cache_dir, name)
        if twin.active:
            return twin
    return model
