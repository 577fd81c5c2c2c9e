"""Models from outside the repository: torchvision and timm by name, any `pkg.module:callable`,
sized by the data config, random weights unless a local file is given, one-line errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tasks  # noqa: F401  (registers the classification task and the external model sources)
from harness.config import compose
from harness.errors import ConfigError, UnsupportedModelError
from harness.registry import TASKS
from harness.run.measure import count_macs
from harness.structure import CostModel, allocate, apply_plan, check_prunable, score_groups
from tasks.classification.models.factories import python_model, torchvision_model


def build(*overrides: str) -> nn.Module:
    cfg = compose(["data=digits", *overrides])
    return TASKS.get(cfg.task.name)(cfg.task).build_model(cfg.model, cfg.data)


def l1(view):
    return view.weight.flatten(1).abs().sum(1) if view.kind in ("conv", "linear") else None


def prune_half(model: nn.Module, x: torch.Tensor) -> float:
    structure = check_prunable(model, x)
    cost = CostModel(structure)
    plan = allocate(cost, score_groups(model, structure, l1), 0.5, floor=0.05)
    apply_plan(model, structure, plan)
    # the analytic cost is exactly fvcore's conv+linear count of the compact model
    assert count_macs(model, tuple(x.shape[1:])).macs == cost.macs(plan.removed(structure))
    return cost.ratio(plan.removed(structure))


def test_torchvision_model_takes_channels_and_classes_from_the_data():
    model = build("model=torchvision", "model.arch=mobilenet_v3_small")
    x = torch.randn(2, 1, 8, 8)  # digits: 1×8×8, 10 classes
    assert model.eval()(x).shape == (2, 10)
    assert abs(prune_half(model, x) - 0.5) <= 0.03
    assert model(x).shape == (2, 10)


def test_timm_model_by_name():
    import timm  # noqa: F401  (the dev extras install it: a missing timm fails here, never skips)

    model = build("model=timm", "model.arch=resnet10t", "+model.kwargs.drop_rate=0.1")
    x = torch.randn(2, 1, 8, 8)
    assert model.eval()(x).shape == (2, 10)
    assert abs(prune_half(model, x) - 0.5) <= 0.03


def small_net(in_chans: int, num_classes: int, width: int = 4) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes),
    )  # fmt: skip


def not_a_module(**kwargs):
    return {"weights": 1}


def test_python_factory_with_kwargs_from_config():
    factory = f"{__name__}:small_net"
    model = build("model=python", f"model.factory={factory}", "+model.kwargs.width=6")
    assert model[0].in_channels == 1 and model[0].out_channels == 6
    assert model[-1].out_features == 10


def test_local_weights_file_loads_what_fits(tmp_path):
    source = torchvision_model("resnet18", num_classes=1000, input_size=32)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = torchvision_model("resnet18", weights=str(tmp_path / "w.pth"), num_classes=10)
    torch.testing.assert_close(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert model.fc.out_features == 10  # the 1000-class head did not fit: stays random


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: torchvision_model("resnet19"), r"unknown torchvision model.arch='resnet19'; "
         r"nearest: resnet18"),
        (lambda: torchvision_model(None), r"model=torchvision needs model.arch=<name>"),
        (lambda: python_model("no_such_pkg.nets:build"), r"cannot import module 'no_such"),
        (lambda: python_model(f"{__name__}:missing"), r"has no attribute 'missing'"),
        (lambda: python_model(f"{__name__}:not_a_module"), r"returned dict, not a torch.nn.Module"),
        (lambda: python_model("nodots"), r"is not 'package.module:callable'"),
        (lambda: torchvision_model("resnet18", weights="DEFAULT_X"), r"not a weights enum"),
        (lambda: torchvision_model("inception_v3", input_size=8), r"cannot run on 3×8×8"),
        (lambda: torchvision_model("vit_b_16", input_size=24), r"cannot run on 3×24×24"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(call, message):
    with pytest.raises(ConfigError, match=message) as e:
        call()
    assert "\n" not in str(e.value)


def test_uncached_weights_are_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ConfigError, match="not cached and PruneBench never downloads"):
        torchvision_model("resnet18", weights="IMAGENET1K_V1")


def test_unsupported_model_is_refused_before_any_work():
    model = torchvision_model("shufflenet_v2_x0_5", num_classes=10, input_size=32)
    with pytest.raises(UnsupportedModelError, match=r"ShuffleNetV2 cannot be pruned: a reshape"):
        check_prunable(model, torch.randn(1, 3, 32, 32))


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch", ["resnet18", "efficientnet_b0", "densenet121", "resnext50_32x4d", "regnet_y_400mf"]
)
def test_zoo_subset_prunes_to_half(arch):
    """A representative subset of benchmarks/zoo.py (residual, SE/depthwise, concat, grouped)."""
    torch.manual_seed(0)
    model = torchvision_model(arch, num_classes=10, input_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    grouped = {n: m.groups for n, m in convs.items() if 1 < m.groups < m.out_channels}
    assert abs(prune_half(model, x) - 0.5) <= 0.03
    assert model(x).shape == (1, 10)
    if grouped:  # ResNeXt/RegNet: their grouped convs lost whole channel groups
        assert any(convs[n].groups < g for n, g in grouped.items())


def test_outside_models_get_their_arch_into_study_and_report_names():
    # two torchvision archs must not share a default study (the resume guard would refuse the
    # second), nor one compare stem or sweep group
    from harness.study import study_name

    tv18, tv50 = (compose(["method=l1", "model=torchvision", f"model.arch={a}"])
                  for a in ("resnet18", "resnet50"))  # fmt: skip
    assert "-torchvision.resnet18-l1-" in study_name(tv18)
    assert study_name(tv18) != study_name(tv50)
    factory = compose(["method=l1", "model=python", "model.factory=mylab.nets:build_net"])
    assert "-python.mylab.nets.build_net-l1-" in study_name(factory)  # no ':' in file stems
    assert "-resnet20-l1-" in study_name(compose(["method=l1", "model=resnet20"]))
