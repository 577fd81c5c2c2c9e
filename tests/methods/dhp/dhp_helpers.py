"""Tiny nets (8×8 inputs) and a hand-built PruneContext for the DHP tests (imported by them)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import methods  # noqa: F401  (registers every method)
from harness.data import TensorBatches
from harness.method import PruneContext
from harness.runtime.device import pick_runtime
from harness.structure import CostModel, build_structure
from harness.task import DataSplits, Task
from harness.train import Trainer
from methods.dhp import DHP


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class ResNetProj(nn.Module):
    """Stem, an identity residual block, a stride-2 block with a 1×1 conv + BN projection."""

    def __init__(self, in_chans: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.stem = conv_bn(in_chans, 8)
        self.a1, self.a2 = conv_bn(8, 8), conv_bn(8, 8)
        self.b1, self.b2 = conv_bn(8, 12, stride=2), conv_bn(12, 12)
        self.proj = conv_bn(8, 12, k=1, stride=2)
        self.fc = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(x + self.a2(F.relu(self.a1(x))))
        x = F.relu(self.proj(x) + self.b2(F.relu(self.b1(x))))
        return self.fc(x.mean((2, 3)))


class InvertedResidualNet(nn.Module):
    """MobileNetV2-like: expand 1×1 → depthwise 3×3 → project 1×1 (+ input), twice."""

    def __init__(self, in_chans: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.stem = conv_bn(in_chans, 8)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {"expand": conv_bn(8, 24, k=1), "dw": conv_bn(24, 24, groups=24),
                 "project": conv_bn(24, 8, k=1)}
            )
            for _ in range(2)
        )  # fmt: skip
        self.head = conv_bn(8, 16, k=1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.stem(x))
        for b in self.blocks:
            h = F.relu6(b["dw"](F.relu6(b["expand"](x))))
            x = x + b["project"](h)
        return self.fc(F.relu6(self.head(x)).mean((2, 3)))


class ConcatNet(nn.Module):
    """A UNet-like concat skip: down (stride 2) → transposed-conv up → cat with the skip → conv."""

    def __init__(self, in_chans: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.enc = conv_bn(in_chans, 8)
        self.down = conv_bn(8, 12, stride=2)
        self.up = nn.ConvTranspose2d(12, 6, 2, stride=2, bias=True)
        self.dec = conv_bn(14, 10)
        self.fc = nn.Linear(10, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = F.relu(self.enc(x))
        u = F.relu(self.up(F.relu(self.down(e))))
        d = F.relu(self.dec(torch.cat([u, e], 1)))
        return self.fc(d.mean((2, 3)))


NETS: dict[str, Callable[[], nn.Module]] = {
    "resnet_proj": ResNetProj,
    "inverted_residual": InvertedResidualNet,
    "concat": ConcatNet,
}


class ToyTask(Task):
    """Cross-entropy classification over random tensors."""

    metric = "top1"

    def input_shape(self, data_cfg):
        return (3, 8, 8)

    def build_data(self, data_cfg, *, seed):
        raise NotImplementedError

    def build_model(self, model_cfg, data_cfg):
        raise NotImplementedError

    def loss(self, model, batch):
        x, y = batch
        out = model(x)
        return {"loss": F.cross_entropy(out, y), "output": out}

    def evaluate(self, model, batches):
        hits = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
        return {"top1": 100.0 * hits / batches.num_samples}


class ToySR(ToyTask):
    """L1 super-resolution over random tensors: 6×6 low-res in, its ×4 nearest upsampling out."""

    metric = "l1"

    def loss(self, model, batch):
        x, y = batch
        out = model(x)
        return {"loss": F.l1_loss(out, y), "output": out}

    def evaluate(self, model, batches):
        return {"l1": sum(float(F.l1_loss(model(x), y)) for x, y in batches)}


def make_sr_ctx(model: nn.Module, *, target: float = 0.5, seed: int = 0) -> PruneContext:
    """A PruneContext for an SR net (task `sr`: restoration search defaults) on 32 random 6×6
    images at batch 8 (4 steps per epoch)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(32, 3, 6, 6, generator=g)
    y = F.interpolate(x, scale_factor=4, mode="nearest")
    train = TensorBatches((x, y), batch_size=8, shuffle=True, seed=seed)
    held = TensorBatches((x[:8], y[:8]), batch_size=8)
    data = DataSplits(train=train, val=held, test=held)
    runtime, task = pick_runtime("cpu"), ToySR(OmegaConf.create({}))
    structure = build_structure(model, x[:1])
    return PruneContext(
        model=model, structure=structure, cost=CostModel(structure), task=task, data=data,
        runtime=runtime, target=target, seed=seed, fit=Trainer(task, data, runtime, seed),
        log_metrics=lambda m, step=None: None, model_name="tiny_sr", task_name="sr",
        data_name="toy", train={},
    )  # fmt: skip


def make_data(n: int = 64, batch: int = 16, seed: int = 0) -> DataSplits:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)
    train = TensorBatches((x, y), batch_size=batch, shuffle=True, seed=seed)
    held = TensorBatches((x[:16], y[:16]), batch_size=16)
    return DataSplits(train=train, val=held, test=held)


def make_ctx(
    model: nn.Module,
    *,
    target: float = 0.5,
    seed: int = 0,
    model_name: str = "tiny",
    log: list | None = None,
) -> PruneContext:
    torch.manual_seed(seed)
    runtime = pick_runtime("cpu")
    task, data = ToyTask(OmegaConf.create({})), make_data(seed=seed)
    structure = build_structure(model, torch.randn(1, 3, 8, 8))
    sink = log if log is not None else []
    return PruneContext(
        model=model, structure=structure, cost=CostModel(structure), task=task, data=data,
        runtime=runtime, target=target, seed=seed, fit=Trainer(task, data, runtime, seed),
        log_metrics=lambda m, step=None: sink.append((step, dict(m))),
        model_name=model_name, task_name="toy", data_name="toy", train={},
    )  # fmt: skip


def dhp(epochs: int, **kwargs) -> DHP:
    """DHP on the toy data: `epochs` search epochs at the toy loader's batch (16: 4 steps per
    epoch; the paper's 64 would leave one), everything else as given."""
    search = {"epochs": epochs, "batch": None, **kwargs.pop("search", {})}
    return DHP(search=search, **kwargs)


def unit_share(cost: CostModel) -> float:
    """The largest MAC share of one unit of a prunable group: on tiny nets one proximal step can
    cross several units' thresholds at once, so landing precision is a few of these."""

    def saved(group: str, size: int) -> int:  # MACs saved by removing the group's first unit
        mask = torch.zeros(size, dtype=torch.bool)
        mask[0] = True
        return cost.base_macs - cost.macs({group: mask})

    return max(saved(g.name, g.size) for g in cost.structure.prunable) / cost.base_macs


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return NETS[name]()


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)
