"""Classification models: shapes at 32×32 and at digits' 8×8, traceability, and MACs/params pinned
to the published CIFAR numbers (fvcore conv + linear, one multiply-add = one MAC)."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from omegaconf import OmegaConf
from torch import nn

import tasks.classification  # noqa: F401  (registers the models)
from harness.errors import ConfigError
from harness.registry import MODELS
from tasks.classification.models.vgg import num_pools
from tasks.classification.task import ClassificationTask

NAMES = [n for n in MODELS.names() if MODELS.info(n).get("task") == "classification"]
EXPECTED = {"mobilenetv2", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
            "resnet164", "vgg16"}  # fmt: skip


def conv_linear_macs(model: nn.Module, shape: tuple[int, ...]) -> float:
    from fvcore.nn import FlopCountAnalysis

    flops = FlopCountAnalysis(model.eval(), torch.zeros(1, *shape))
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    ops = flops.by_operator()
    return float(sum(ops.get(k, 0) for k in ("conv", "linear", "addmm")))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_all_classification_models_registered():
    assert EXPECTED <= set(NAMES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forward_cifar_and_digits_shapes(name):
    torch.manual_seed(0)
    model = MODELS.get(name)(in_chans=3, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    task = ClassificationTask(OmegaConf.create({"name": "classification"}))
    data_cfg = OmegaConf.create({"name": "digits", "shape": [1, 8, 8], "num_classes": 7})
    small = task.build_model(OmegaConf.create({"name": name}), data_cfg).eval()
    with torch.no_grad():
        assert small(torch.randn(2, 1, 8, 8)).shape == (2, 7)


@pytest.mark.parametrize("name", ["resnet20", "resnet164", "vgg16", "mobilenetv2"])
def test_models_trace_with_fx(name):
    model = MODELS.get(name)().eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


def test_resnet56_projection_and_padding_shortcuts_differ_by_the_projections():
    proj = MODELS.get("resnet56")(shortcut="projection")
    pad = MODELS.get("resnet56")(shortcut="padding")
    # the two 1×1 stride-2 projections (16→32 at 16×16, 32→64 at 8×8) with their BatchNorms are
    # the only difference: 262,144 MACs and 2,560 + 192 parameters
    macs_proj, macs_pad = conv_linear_macs(proj, (3, 32, 32)), conv_linear_macs(pad, (3, 32, 32))
    assert macs_proj - macs_pad == 16 * 32 * 16 * 16 + 32 * 64 * 8 * 8
    assert n_params(proj) - n_params(pad) == 16 * 32 + 32 * 64 + 2 * (32 + 64)
    # the published 125.75 M / 125.49 M, each within a window narrower than half the gap
    assert macs_proj == pytest.approx(125.75e6, abs=0.01e6)
    assert macs_pad == pytest.approx(125.49e6, abs=0.01e6)
    assert n_params(proj) == pytest.approx(0.856e6, abs=0.001e6)
    assert n_params(pad) == pytest.approx(0.853e6, abs=0.001e6)


def test_resnet20_macs_params():
    model = MODELS.get("resnet20")()
    assert conv_linear_macs(model, (3, 32, 32)) == pytest.approx(41e6, rel=0.01)
    assert n_params(model) == pytest.approx(0.27e6, abs=0.005e6)


def test_padding_shortcut_adds_no_parameters_and_pads_channels():
    a, b = MODELS.get("resnet20")(shortcut="projection"), MODELS.get("resnet20")(shortcut="padding")
    # the two projections: conv 16→32 + BN(32), conv 32→64 + BN(64)
    assert n_params(a) - n_params(b) == 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    x = torch.randn(1, 16, 8, 8)
    y = b.layer2[0].shortcut(x)
    assert y.shape == (1, 32, 4, 4)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_unknown_shortcut_and_model_option_raise():
    with pytest.raises(ConfigError, match="known: projection, padding"):
        MODELS.get("resnet20")(shortcut="pad")
    task = ClassificationTask(OmegaConf.create({"name": "classification"}))
    data_cfg = OmegaConf.create({"name": "cifar10", "shape": [3, 32, 32], "num_classes": 10})
    with pytest.raises(ConfigError, match="shortcut"):
        task.build_model(OmegaConf.create({"name": "resnet20", "shortcutt": "padding"}), data_cfg)


def test_vgg_pools_follow_input_size():
    assert [num_pools(s, 4) for s in (32, 16, 8, 4, 2)] == [4, 3, 2, 1, 0]
    model = MODELS.get("vgg16")(input_size=32)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    assert conv_linear_macs(model, (3, 32, 32)) == pytest.approx(313.2e6, rel=1e-3)


def test_mobilenetv2_residuals_and_depthwise():
    from tasks.classification.models.mobilenetv2 import InvertedResidual

    model = MODELS.get("mobilenetv2")()
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17
    assert sum(b.use_residual for b in blocks) == 10  # n − 1 per stage, none in the first
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 17 and all(m.groups == m.in_channels for m in depthwise)
    with pytest.raises(ConfigError, match="stage_strides"):
        MODELS.get("mobilenetv2")(stage_strides=[1, 2])
