"""A per-device latency table of a model's prunable layers, and a cost model built on it.

NetAdapt's recipe (ECCV 2018): time every conv/linear layer in isolation at kept-channel counts in
steps of `step` (8), on the run's device, batch, dtype, memory format and thread count, and
predict a network's latency as the sum over its layers. Timing every multiple of 8 of both sides
of every layer is too slow on a 2-core CPU, so each prunable side is timed on a coarse grid of
step multiples (`grid` points between `step` and the full width, plus 1 channel and the full
width) and the table interpolates bilinearly between them at the exact kept counts. The table is
made monotone (a running maximum: more channels never time faster; see `_monotone`). (Rounding a
query up to the step, as if every kernel padded channels, mispredicted PyTorch's CPU convs by up
to 70 % on ResNet-20: they do not pad; `prune.round_to` is the setting that makes widths
hardware-friendly.)

Layers of the same shape share one entry, and the table is cached on disk under a key of the
device, torch version, thread count, batch, dtype, memory format and grid, so a study builds it
once and a changed key builds a new one.

What the layers do not explain (BatchNorm, activations, adds, pooling, Python dispatch) is the
*residual*: the measured forward pass minus the table's sum. It is modelled as a fixed part plus a
part proportional to the layers' output elements (BatchNorm and activations run over every output
channel), the two calibrated from the unpruned model and one pruned probe (`calibrate`); both
clamped at ≥ 0, so where the data disagree the fixed part takes the residual and the prediction
errs slow.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from harness.errors import ConfigError, ImpossibleTargetError
from harness.run.measure import Timing, time_call
from harness.runtime.atomic import atomic_write
from harness.runtime.device import Runtime, eval_mode
from harness.structure.cost import CostModel
from harness.structure.groups import Structure

__all__ = [
    "LatencyCostModel",
    "LatencyTable",
    "LayerSpec",
    "TorchLayerTimer",
    "environment_key",
    "layer_specs",
    "latency_allocation_target",
]

log = logging.getLogger(__name__)

#: bumped when what a table entry means changes: older caches are then rebuilt, not reused
TABLE_FORMAT = 3
#: (spec, kept in, kept out) → timing of that layer in isolation
Timer = Callable[["LayerSpec", int, int], Timing]


@dataclass(frozen=True)
class LayerSpec:
    """One conv/linear layer's shape, enough to rebuild it at other channel counts and time it."""

    kind: str  # conv | convT | linear
    in_channels: int
    out_channels: int
    groups: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    output_padding: tuple[int, ...]
    bias: bool
    input_rest: tuple[int, ...]  # input shape after batch, without the channel dim

    @property
    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def depthwise_like(self) -> bool:
        """Grouped convs lose whole groups: their input side follows the output side."""
        return self.kind != "linear" and self.groups > 1

    def module(self, kept_in: int, kept_out: int) -> tuple[nn.Module, tuple[int, ...]]:
        """The layer at (kept_in, kept_out) channels and its input shape after the batch."""
        if self.kind == "linear":
            return nn.Linear(kept_in, kept_out, bias=self.bias), (*self.input_rest, kept_in)
        groups = 1
        if self.groups > 1:
            per_group_out = self.out_channels // self.groups
            groups = max(1, kept_out // per_group_out)
            kept_in = groups * (self.in_channels // self.groups)
        cls = nn.ConvTranspose2d if self.kind == "convT" else nn.Conv2d
        extra = {"output_padding": self.output_padding} if self.kind == "convT" else {}
        m = cls(
            kept_in,
            kept_out,
            self.kernel,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=groups,
            bias=self.bias,
            **extra,
        )
        return m, (kept_in, *self.input_rest)


def _pair(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in v) if isinstance(v, tuple | list) else (int(v), int(v))


def layer_specs(model: nn.Module, example: Tensor, names: list[str]) -> dict[str, LayerSpec]:
    """The spec of every layer in `names`, from one forward pass at `example` (batch of one)."""
    modules = dict(model.named_modules())
    seen: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name in names:
        m = modules[name]

        def hook(_m: nn.Module, args: tuple, _out: Any, name: str = name) -> None:
            seen.setdefault(name, tuple(args[0].shape))

        hooks.append(m.register_forward_hook(hook))
    try:
        with eval_mode(model):
            model(example)
    finally:
        for h in hooks:
            h.remove()
    specs = {}
    for name in names:
        m = modules[name]
        if name not in seen:
            continue  # never called at this input: it costs nothing
        shape = seen[name]
        if isinstance(m, nn.Linear):
            specs[name] = LayerSpec(
                "linear", m.in_features, m.out_features, 1, (1,), (1,), (0,), (1,), (0,),
                m.bias is not None, shape[1:-1],
            )  # fmt: skip
        elif isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            if not isinstance(m.padding, tuple):
                raise ConfigError(
                    f"layer {name} uses padding='{m.padding}'; the latency table needs numbers"
                )
            convt = isinstance(m, nn.ConvTranspose2d)
            specs[name] = LayerSpec(
                "convT" if convt else "conv",
                m.in_channels,
                m.out_channels,
                m.groups,
                _pair(m.kernel_size),
                _pair(m.stride),
                _pair(m.padding),
                _pair(m.dilation),
                _pair(m.output_padding) if convt else (0, 0),
                m.bias is not None,
                shape[2:],
            )
    return specs


class TorchLayerTimer:
    """Times one layer in isolation as the run would run it: device, batch, autocast dtype,
    memory format and the current thread count; median of `repeats` with the spread kept."""

    def __init__(self, runtime: Runtime, batch: int, *, repeats: int = 7, warmup: int = 2):
        self.runtime, self.batch, self.repeats, self.warmup = runtime, batch, repeats, warmup

    def __call__(self, spec: LayerSpec, kept_in: int, kept_out: int) -> Timing:
        m, rest = spec.module(kept_in, kept_out)
        m = self.runtime.prepare(m)
        x = torch.randn(self.batch, *rest, device=self.runtime.device)
        if self.runtime.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with eval_mode(m), self.runtime.autocast():
            return time_call(lambda: m(x), self.runtime, repeats=self.repeats, warmup=self.warmup)


def environment_key(runtime: Runtime, batch: int, **extra: Any) -> dict[str, Any]:
    """What a timing depends on besides the layer: the table is rebuilt when any of it changes."""
    from harness.runtime.provenance import hardware

    hw = hardware()
    device = hw["gpu"] if runtime.device.type == "cuda" else hw["cpu"]
    return {
        "device": f"{runtime.device.type}:{device}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": int(batch),
        "dtype": str(runtime.amp_dtype or torch.get_default_dtype()),
        "channels_last": bool(runtime.channels_last),
        **extra,
    }


def _grid(full: int, step: int, points: int, varies: bool) -> list[int]:
    """Kept-channel counts timed for one side: step multiples from `step` to `full`."""
    if not varies:
        return [full]
    values = {1, full, min(full, step)}
    for i in range(1, points):
        values.add(min(full, max(step, round(full * i / points / step) * step)))
    return sorted(values)


def _monotone(ms: list[list[float]]) -> list[list[float]]:
    """Running maximum along both axes: a layer never gets faster with more channels, so a
    timing that says so is noise (a loaded machine) and would let a pruned plan predict slower
    than the unpruned one. The raw timings are kept beside it."""
    a = np.maximum.accumulate(np.maximum.accumulate(np.asarray(ms, dtype=float), axis=0), axis=1)
    return a.tolist()


class LatencyTable:
    """Per-layer latency (ms) at kept-channel counts, for one environment, cached on disk.

    `cache_dir` None keeps it in memory only. `timer` is injectable (tests use a deterministic
    one); the default times the layer with `TorchLayerTimer`.
    """

    def __init__(
        self,
        env: Mapping[str, Any],
        *,
        timer: Timer,
        cache_dir: str | Path | None = None,
        step: int = 8,
        grid: int = 4,
    ) -> None:
        if step < 1 or grid < 1:
            raise ConfigError(f"latency table step={step} and grid={grid} must be ≥ 1")
        self.env = {**env, "step": int(step), "grid": int(grid), "format": TABLE_FORMAT}
        self.step, self.points, self.timer = int(step), int(grid), timer
        digest = hashlib.sha256(json.dumps(self.env, sort_keys=True).encode()).hexdigest()[:16]
        self.path = None if cache_dir is None else Path(cache_dir) / "latency" / f"{digest}.json"
        self.entries: dict[str, dict[str, Any]] = {}
        self.timed = 0  # layer timings this object ran (the rest came from the cache)
        if self.path is not None and self.path.exists():
            try:
                doc = json.loads(self.path.read_text())
                if doc.get("env") == self.env:
                    self.entries = doc["layers"]
            except (OSError, ValueError, KeyError):
                log.warning("latency table %s is unreadable; rebuilding it", self.path)

    def ensure(
        self,
        specs: Mapping[str, LayerSpec],
        varies: Mapping[str, tuple[bool, bool]],
        *,
        force: bool = False,
    ):
        """Time every (shape, prunable sides) not in the table yet (`force`: every one of
        `specs` again, replacing the cached timings), then save the table."""
        if force:
            for name, spec in specs.items():
                vin, vout = varies.get(name, (False, False))
                self.entries.pop(self._key(spec, vin and not spec.depthwise_like, vout), None)
        added = False
        for name, spec in specs.items():
            vin, vout = varies.get(name, (False, False))
            if spec.depthwise_like:
                vin = False  # follows the output side
            key = self._key(spec, vin, vout)
            if key in self.entries:
                continue
            ins = _grid(spec.in_channels, self.step, self.points, vin)
            outs = _grid(spec.out_channels, self.step, self.points, vout)
            ms, spread = [], []
            for i in ins:
                row = [self.timer(spec, i, o) for o in outs]
                ms.append([t.median_ms for t in row])
                spread.append([t.spread_ms for t in row])
                self.timed += len(row)
            self.entries[key] = {"in": ins, "out": outs, "ms": _monotone(ms), "timed_ms": ms,
                                 "spread": spread}  # fmt: skip
            added = True
        if added:
            self._save()
        return self

    @staticmethod
    def _key(spec: LayerSpec, vin: bool, vout: bool) -> str:
        return f"{spec.key}|{int(vin)}{int(vout)}"

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entries = dict(self.entries)
        if self.path.exists():  # another process may have added shapes meanwhile: keep them
            try:
                doc = json.loads(self.path.read_text())
                if doc.get("env") == self.env:
                    entries = {**doc["layers"], **entries}
            except (OSError, ValueError, KeyError):
                pass
        text = json.dumps({"env": self.env, "layers": entries}, sort_keys=True)
        atomic_write(self.path, lambda p: Path(p).write_text(text))

    def predict(self, spec: LayerSpec, varies: tuple[bool, bool], kept_in: int, kept_out: int):
        """Latency (ms) of the layer at (kept_in, kept_out), interpolated on the timed grid."""
        vin, vout = varies
        if spec.depthwise_like:
            vin = False
        e = self.entries[self._key(spec, vin, vout)]
        if kept_in <= 0 or kept_out <= 0:
            return 0.0
        ms = np.asarray(e["ms"], dtype=float)
        along_out = [np.interp(kept_out, e["out"], row) for row in ms]
        return float(np.interp(kept_in, e["in"], along_out))


class LatencyCostModel(CostModel):
    """`CostModel` whose per-layer "MACs" are the table's predicted milliseconds.

    Everything that consumes a cost model (the allocator, its tracker, `ratio`) then allocates
    to latency: `base_macs` is the table's sum at full width, in ms. The residual (what the
    layers do not explain, see the module doc) is not in it; `latency_allocation_target`
    converts a whole-network latency ratio into a ratio of this sum.
    """

    def __init__(
        self,
        structure: Structure,
        table: LatencyTable,
        specs: Mapping[str, LayerSpec],
    ) -> None:
        self.table, self.specs = table, dict(specs)
        self.per_element_ms = 0.0  # residual per output element, set by `calibrate`
        self.fixed_ms = 0.0  # residual that does not shrink
        self.scale = 1.0  # < 1 where the table sums to more than the measured network
        # set before CostModel.__init__, which computes base_macs through layer_macs
        sides = {(s.module, s.side) for g in structure.prunable for s in g.slots}
        self.varies = {n: ((n, "in") in sides, (n, "out") in sides) for n in self.specs}
        table.ensure(self.specs, self.varies)
        super().__init__(structure)

    def layer_macs(self, name: str, in_ch: int, out_ch: int) -> float:  # type: ignore[override]
        spec = self.specs.get(name)
        if spec is None:
            return 0.0
        elements = out_ch * self.layers[name].positions if self.per_element_ms else 0
        return self.scale * self.table.predict(spec, self.varies[name], in_ch, out_ch) + (
            self.per_element_ms * elements
        )

    def elements(self, removed: Mapping[str, Tensor] | None = None) -> int:
        """Output elements (channels × positions) of the layers, per sample."""
        return sum(
            out * self.layers[n].positions
            for n, (_, out) in self.channels(removed).items()
            if n in self.specs
        )

    def calibrate(
        self,
        base_ms: float,
        probe_ms: float,
        probe: Mapping[str, Tensor],
    ) -> None:
        """Split the residual into a per-element and a fixed part from two measured forward
        passes: the unpruned model (`base_ms`) and a pruned probe (`probe_ms`, its removed
        units `probe`). Afterwards `macs()` (+ `fixed_ms`) predicts the whole network. Where
        the table alone sums to more than the measured network (timed under another load), it
        is scaled down to it instead, with no residual."""
        self.per_element_ms, self.fixed_ms, self.scale = 0.0, 0.0, 1.0
        table0, table1 = self.macs(), self.macs(probe)
        r0, r1 = base_ms - table0, probe_ms - table1
        if r0 < 0:
            self.scale = base_ms / table0
            self.base_macs = self.macs()
            return
        e0, e1 = self.elements(), self.elements(probe)
        slope = (r0 - r1) / (e0 - e1) if e0 != e1 else 0.0
        slope = min(max(slope, 0.0), max(r0, 0.0) / e0 if e0 else 0.0)
        self.per_element_ms = slope
        self.fixed_ms = r0 - slope * e0
        self.base_macs = self.macs()

    def predict_ms(self, removed: Mapping[str, Tensor] | None = None) -> float:
        """The whole network's predicted latency (ms) after removing the marked units."""
        return self.macs(removed) + self.fixed_ms


def latency_allocation_target(
    target: float, *, layers_ms: float, residual_ms: float, floor_ratio: float | None = None
) -> float:
    """The ratio of the table's layer sum to allocate to so that the predicted whole network,
    (layers + residual) / (layers_base + residual), is ≤ `target` with the residual held fixed.
    Refuses, in one line, a target that the floors (`floor_ratio`: the layer-sum ratio of the
    smallest plan the floors allow) or the residual put out of reach."""
    total = layers_ms + residual_ms
    t = (target * total - residual_ms) / layers_ms
    lowest = ((floor_ratio if floor_ratio is not None else 0.0) * layers_ms + residual_ms) / total
    if t <= 0.0 or (floor_ratio is not None and floor_ratio > t):
        raise ImpossibleTargetError(
            f"latency target={target} is out of reach: with the floors the smallest plan is "
            f"predicted at {lowest:.3f} of the measured latency ({residual_ms / total:.1%} of it "
            "is work pruning does not shrink: dispatch, pooling, ...); raise the target or "
            "lower prune.floor"
        )
    return min(1.0, t)
