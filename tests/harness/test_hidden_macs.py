"""MACs the cost model cannot see (a layer called through F.linear, attention matmuls): a run still
lands at its target as fvcore measures it, or is refused before any training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.config import compose
from harness.errors import ImpossibleTargetError
from harness.run.measure import count_macs
from harness.run.pipeline import run
from harness.structure import CostModel, allocation_target, build_structure


class PixelMixer(nn.Module):
    """Mixes the input's pixels through `F.linear` on a Linear's own weight, as Swin's attention
    does with its qkv and proj: fvcore counts those MACs, no forward hook ever sees them."""

    def __init__(self, in_chans: int = 1, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.mix = nn.Linear(64, 64, bias=False)  # 8×8 pixels
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU())
        self.mlp = nn.Sequential(
            nn.Conv2d(width, 4 * width, 1), nn.ReLU(), nn.Conv2d(4 * width, width, 1)
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + F.linear(x.flatten(2), self.mix.weight).view_as(x)
        x = self.stem(x)
        x = x + self.mlp(x)
        return self.head(x.mean((2, 3)))


def pixel_mixer(in_chans: int, num_classes: int) -> nn.Module:
    return PixelMixer(in_chans, num_classes)


class ChannelAttention(nn.Module):
    """Self-attention over the 64 pixels by plain matmuls on the stem's channels, as in MobileViT:
    those hidden MACs shrink when stem channels are pruned."""

    def __init__(self, in_chans: int = 1, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU())
        self.mlp = nn.Sequential(
            nn.Conv2d(width, 4 * width, 1), nn.ReLU(), nn.Conv2d(4 * width, width, 1)
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        t = x.flatten(2)  # B, C, N
        attention = torch.softmax(t.transpose(1, 2) @ t, dim=-1)  # C·N² MACs
        x = x + (t @ attention).view_as(x)  # C·N² MACs
        x = x + self.mlp(x)
        return self.head(x.mean((2, 3)))


def channel_attention(in_chans: int, num_classes: int) -> nn.Module:
    return ChannelAttention(in_chans, num_classes)


def test_hidden_macs_are_measured_but_not_in_the_cost_model():
    model = PixelMixer().eval()
    measured = count_macs(model, (1, 8, 8)).macs
    analytic = CostModel(build_structure(model, torch.randn(1, 1, 8, 8))).base_macs
    assert measured - analytic == 64 * 64  # the functional mix


def test_allocation_target_makes_the_visible_layers_carry_the_cut():
    assert allocation_target(0.5, measured=1000, analytic=1000) == 0.5  # nothing hidden
    assert allocation_target(0.5, measured=900, analytic=1000) == 0.5  # fvcore saw less
    # 200 hidden MACs stay: the 800 visible ones must lose the whole 500
    assert allocation_target(0.5, measured=1000, analytic=800) == pytest.approx(300 / 800)
    with pytest.raises(ImpossibleTargetError, match=r"target=0.1 is out of reach: 20.0% of"):
        allocation_target(0.1, measured=1000, analytic=800)


def quick(tmp_path, *extra, factory: str = "pixel_mixer"):
    return compose(
        [
            "task=classification",
            "data=digits",
            "model=python",
            f"model.factory={__name__}:{factory}",
            "method=l1",
            "train.epochs=1",
            "finetune.epochs=1",
            "measure.latency_repeats=2",
            "tracking.enabled=false",
            f"outputs={tmp_path}",
            *extra,
        ]
    )


def test_run_lands_at_the_measured_target(tmp_path):
    record = run(quick(tmp_path, "target=0.5"))
    # allocating 0.5 of the visible MACs alone would measure 0.549
    assert 0.47 <= record["macs_ratio"] <= 0.5


def test_target_below_the_hidden_share_is_refused_before_training(tmp_path):
    with pytest.raises(ImpossibleTargetError, match=r"target=0.05 is out of reach: 9.9% of"):
        run(quick(tmp_path, "target=0.05"))
    assert not list(tmp_path.rglob("*.pt"))  # no baseline was trained


def test_hidden_macs_that_shrink_do_not_make_the_run_overshoot(tmp_path):
    # the conservative target alone measures 0.30 here: the attention shrinks with the stem
    record = run(quick(tmp_path, "target=0.7", factory="channel_attention"))
    assert 0.67 <= record["macs_ratio"] <= 0.7
