"""Tiny nets and data built in milliseconds, registered as `test_*` models so the CLI can use
them too. Each covers one coupling case of the structure engine."""

from __future__ import annotations

import logging
import os

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from harness.config import config_dir
from harness.registry import MODELS
from harness.runtime.plugins import load_configured

# what every entry point does first: register the built-in methods, tasks, models and datasets
load_configured(OmegaConf.load(config_dir() / "config.yaml"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` on N cores: one intra-op thread per worker, or torch oversubscribes the cores
    torch.set_num_threads(
        max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    )


def conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class TinyResNet(nn.Module):
    """Residual adds plus a 1×1 projection shortcut where the width changes."""

    def __init__(self, in_chans: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = conv_bn(in_chans, 8)
        self.b1 = conv_bn(8, 8)
        self.b2 = conv_bn(8, 8)
        self.c1 = conv_bn(8, 12, stride=2)
        self.c2 = conv_bn(12, 12)
        self.proj = nn.Sequential(nn.Conv2d(8, 12, 1, 2, bias=False), nn.BatchNorm2d(12))
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(x + self.b2(F.relu(self.b1(x))))
        x = F.relu(self.proj(x) + self.c2(F.relu(self.c1(x))))
        return self.fc(x.mean((2, 3)))


class TinyDepthwise(nn.Module):
    """An inverted residual: expand 1×1 → depthwise 3×3 → project 1×1, with a residual add."""

    def __init__(self, in_chans: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = conv_bn(in_chans, 8)
        self.expand = nn.Sequential(nn.Conv2d(8, 24, 1, bias=False), nn.BatchNorm2d(24))
        self.dw = conv_bn(24, 24, groups=24)
        self.project = nn.Sequential(nn.Conv2d(24, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        h = F.relu(self.dw(F.relu(self.expand(x))))
        x = x + self.project(h)
        return self.fc(x.mean((2, 3)))


class TinyConcat(nn.Module):
    """A UNet-like concat skip with a transposed-conv upsampler and a BN-free global residual."""

    def __init__(self, in_chans: int = 1, num_classes: int = 0) -> None:
        super().__init__()
        self.enc = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(12, 6, 2, stride=2)
        self.dec = nn.Conv2d(14, 8, 3, padding=1)
        self.out = nn.Conv2d(8, in_chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = F.relu(self.enc(x))
        u = F.relu(self.up(F.relu(self.down(e))))
        d = F.relu(self.dec(torch.cat([u, e], 1)))
        return x - self.out(d)


class TinyGrouped(nn.Module):
    """A ResNeXt bottleneck: 1×1 expand → grouped 3×3 (4 groups of 4 → 6) → 1×1, residual add;
    pruned by whole channel groups."""

    def __init__(self, in_chans: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = conv_bn(in_chans, 8)
        self.expand = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.grouped = nn.Sequential(
            nn.Conv2d(16, 24, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(24)
        )
        self.project = nn.Sequential(nn.Conv2d(24, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        h = F.relu(self.grouped(F.relu(self.expand(x))))
        x = x + self.project(h)
        return self.fc(x.mean((2, 3)))


for _name, _cls in (
    ("test_resnet", TinyResNet),
    ("test_depthwise", TinyDepthwise),
    ("test_concat", TinyConcat),
    ("test_grouped", TinyGrouped),
):
    if _name not in MODELS:
        MODELS.register(_name, task="test")(_cls)

#: a whole pipeline run in seconds: digits (200 images) on TinyResNet, no tracking or latency
TINY_RUN = [
    "task=classification",
    "data=digits",
    "data.train_subset=200",
    "model=python",
    "model.factory=tests.conftest:TinyResNet",
    "measure.latency=false",
    "tracking.enabled=false",
]

TINY_MODELS = {
    "resnet": TinyResNet,
    "depthwise": TinyDepthwise,
    "concat": TinyConcat,
    "grouped": TinyGrouped,
}


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics so equivalence tests cannot pass by accident."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model


@pytest.fixture(autouse=True)
def _root_log_handlers():
    """`prunebench` called in-process installs a root handler on the stderr of that moment
    (logging.basicConfig), which pytest's capture closes when the test ends: a later test that
    logs would write to a closed stream. Handlers a test adds are removed after it."""
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


@pytest.fixture(params=sorted(TINY_MODELS))
def tiny(request) -> tuple[str, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    name = request.param
    in_chans = 1 if name == "concat" else 3
    model = randomize_bn(TINY_MODELS[name](in_chans=in_chans)).eval()
    return name, model, torch.randn(2, in_chans, 8, 8)


from tests.slurm_cluster import slurm_cluster  # noqa: E402,F401 - a session fixture
