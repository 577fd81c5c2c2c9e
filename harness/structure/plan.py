"""Plans (group → kept units) and what they do to a model: physical removal, masking, save/load.

A pruned model's saved form is its state_dict plus its channel configuration (every layer's
in/out/groups), so it reloads by resizing a freshly built base model — no tracing, no pruning code.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from harness.errors import CheckpointError
from harness.runtime.atomic import atomic_write
from harness.structure.groups import Structure
from harness.structure.layers import PRUNABLE_TYPES, channel_sizes

__all__ = [
    "Plan",
    "apply_plan",
    "channel_config",
    "load_pruned",
    "masked_copy",
    "resize_to",
    "save_pruned",
]


@dataclass
class Plan:
    """Group name → sorted indices of the units kept. Groups not listed keep every unit."""

    kept: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def from_removed(cls, removed: Mapping[str, Tensor]) -> Plan:
        return cls({g: torch.nonzero(~m).flatten().tolist() for g, m in removed.items()})

    def removed(self, structure: Structure) -> dict[str, Tensor]:
        """Group → [size] bool mask, True where the unit is removed."""
        masks = {}
        for name, kept in self.kept.items():
            size = structure.groups[name].size
            mask = torch.ones(size, dtype=torch.bool)
            mask[torch.as_tensor(kept, dtype=torch.long)] = False
            masks[name] = mask
        return masks

    def to_dict(self) -> dict[str, list[int]]:
        return {g: list(map(int, k)) for g, k in sorted(self.kept.items())}


def _kept_channels(
    structure: Structure, removed: Mapping[str, Tensor], name: str, side: str, total: int
) -> Tensor | None:
    """Indices of the channels of one layer side that survive; None when nothing is removed."""
    keep = torch.ones(total, dtype=torch.bool)
    for group, slot in structure.slots_of(name, side):
        mask = removed.get(group.name)
        if mask is not None:
            keep[slot.channels[mask[slot.units]]] = False
    return None if bool(keep.all()) else torch.nonzero(keep).flatten()


def _take(p: nn.Parameter | Tensor | None, dim: int, idx: Tensor):
    if p is None:
        return None
    data = p.data.index_select(dim, idx.to(p.device)).clone()
    return (
        nn.Parameter(data, requires_grad=p.requires_grad) if isinstance(p, nn.Parameter) else data
    )


def _slice_out(m: nn.Module, idx: Tensor) -> None:
    n = len(idx)
    if isinstance(m, nn.ConvTranspose2d):
        m.weight = _take(m.weight, 1, idx)
        m.bias = _take(m.bias, 0, idx)
        m.out_channels = n
    elif isinstance(m, nn.Conv2d):
        depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
        per_group = m.out_channels // m.groups
        m.weight = _take(m.weight, 0, idx)
        m.bias = _take(m.bias, 0, idx)
        m.out_channels = n
        if depthwise:  # input side follows the output side
            m.in_channels = m.groups = n
        elif m.groups > 1:  # whole groups removed (see groups._merge_grouped_convs)
            m.groups = n // per_group
            m.in_channels = m.groups * m.weight.shape[1]
    elif isinstance(m, nn.Linear):
        m.weight = _take(m.weight, 0, idx)
        m.bias = _take(m.bias, 0, idx)
        m.out_features = n
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        m.weight, m.bias = _take(m.weight, 0, idx), _take(m.bias, 0, idx)
        if m.running_mean is not None:
            m.running_mean = _take(m.running_mean, 0, idx)
            m.running_var = _take(m.running_var, 0, idx)
        m.num_features = n
    elif isinstance(m, nn.PReLU):
        m.weight = _take(m.weight, 0, idx)
        m.num_parameters = n


def _slice_in(m: nn.Module, idx: Tensor) -> None:
    n = len(idx)
    if isinstance(m, nn.ConvTranspose2d):
        m.weight = _take(m.weight, 0, idx)
        m.in_channels = n
    elif isinstance(m, nn.Conv2d):
        if m.groups > 1:  # depthwise or grouped: sliced with its output side
            return
        m.weight = _take(m.weight, 1, idx)
        m.in_channels = n
    elif isinstance(m, nn.Linear):
        m.weight = _take(m.weight, 1, idx)
        m.in_features = n


def apply_plan(model: nn.Module, structure: Structure, plan: Plan) -> nn.Module:
    """Physically remove the plan's pruned channels from `model` (in place) and return it.

    The optimizer must be rebuilt afterwards: parameters are replaced, not resized in place.
    """
    removed = plan.removed(structure)
    modules = dict(model.named_modules())
    todo = []
    for name, side in structure.layer_sides():
        m = modules[name]
        total = channel_sizes(m)[0 if side == "in" else 1]
        idx = _kept_channels(structure, removed, name, side, total)
        if idx is not None:
            todo.append((m, side, idx))
    for m, side, idx in todo:  # compute every index first, then mutate
        (_slice_out if side == "out" else _slice_in)(m, idx)
    return model


@torch.no_grad()
def masked_copy(model: nn.Module, structure: Structure, plan: Plan) -> nn.Module:
    """A copy whose removed channels are cut off from every consumer (their input slices zeroed).

    Its output equals the physically pruned model's: the reference for equivalence tests.
    """
    masked = copy.deepcopy(model)
    removed = plan.removed(structure)
    modules = dict(masked.named_modules())
    for name, side in structure.layer_sides():
        if side != "in":
            continue
        m = modules[name]
        total = channel_sizes(m)[0]
        keep = _kept_channels(structure, removed, name, side, total)
        if keep is None:
            continue
        drop = torch.ones(total, dtype=torch.bool)
        drop[keep] = False
        if isinstance(m, nn.ConvTranspose2d):
            m.weight[drop] = 0
        elif isinstance(m, nn.Conv2d) and m.groups > 1:
            # a removed input block silences the output block it feeds (depthwise: one channel)
            blocks = drop.view(m.groups, -1).all(1)
            m.weight[blocks.repeat_interleave(m.out_channels // m.groups)] = 0
        else:
            m.weight[:, drop] = 0
    return masked


def channel_config(model: nn.Module) -> dict[str, dict[str, int]]:
    """Every sliceable layer's channel counts: what `resize_to` needs to rebuild the shapes."""
    config = {}
    for name, m in model.named_modules():
        if isinstance(m, PRUNABLE_TYPES):
            i, o = channel_sizes(m)
            entry = {"in": i, "out": o}
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                entry["groups"] = m.groups
            config[name] = entry
    return config


def resize_to(model: nn.Module, config: Mapping[str, Mapping[str, int]]) -> nn.Module:
    """Give every listed layer the channel counts of `config` (weights uninitialised)."""
    modules = dict(model.named_modules())
    for name, entry in config.items():
        if name not in modules:
            raise CheckpointError(f"channel config names layer '{name}', which the model lacks")
        m = modules[name]
        i, o = channel_sizes(m)
        if (i, o) == (entry["in"], entry["out"]) and entry.get("groups", 1) == getattr(
            m, "groups", 1
        ):
            continue
        _slice_out(m, torch.arange(entry["out"]) % max(1, o))
        if not (isinstance(m, nn.Conv2d) and m.groups > 1):
            _slice_in(m, torch.arange(entry["in"]) % max(1, i))
        if "groups" in entry:
            m.groups = entry["groups"]
            if isinstance(m, nn.Conv2d) and m.groups > 1:
                m.in_channels = entry["in"]
    return model


def save_pruned(
    directory: str | Path, model: nn.Module, plan: Plan, meta: Mapping[str, Any]
) -> Path:
    """Write `model.pt` (state_dict) and `plan.json` (plan, channel config, meta) atomically."""
    directory = Path(directory)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / "model.pt", lambda p: torch.save(state, p))
    doc = {"meta": dict(meta), "plan": plan.to_dict(), "channels": channel_config(model)}

    def write_json(p: str) -> None:
        with open(p, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)

    atomic_write(directory / "plan.json", write_json)
    return directory


def load_pruned(directory: str | Path, base_model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """Resize a freshly built `base_model` to the saved channels and load the weights."""
    directory = Path(directory)
    try:
        doc = json.loads((directory / "plan.json").read_text())
        state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"no pruned model at {directory}: missing {e.filename}") from e
    except Exception as e:  # noqa: BLE001 - unpickling raises many types; all mean "unusable"
        raise CheckpointError(f"corrupt pruned model at {directory}: {e}") from e
    saved = doc.get("meta", {}).get("model", "?")
    try:
        resize_to(base_model, doc["channels"])
        base_model.load_state_dict(state, strict=True)
    except (RuntimeError, CheckpointError) as e:
        raise CheckpointError(
            f"checkpoint {directory / 'model.pt'} (model '{saved}') does not match "
            f"{type(base_model).__name__}: {e}"
        ) from e
    return base_model, doc
