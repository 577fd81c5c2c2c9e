"""The classification task: loss and evaluation on tiny models, metrics by hand, and the configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import tasks.classification  # noqa: F401  (registers task, data and models)
from harness.data import TensorBatches
from harness.registry import DATASETS, MODELS, TASKS
from tasks.classification.metrics import accuracy, topk_correct
from tasks.classification.task import ClassificationTask

CONF = Path(__file__).resolve().parents[3] / "conf"


def make_task(**over) -> ClassificationTask:
    cfg = OmegaConf.load(CONF / "task" / "classification.yaml").task
    return TASKS.get("classification")(OmegaConf.merge(cfg, over))


def test_topk_by_hand():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    target = torch.tensor([2, 0, 0])
    assert topk_correct(logits, target, (1, 2, 5)).tolist() == [1, 2, 3]
    assert accuracy(logits, target).item() == pytest.approx(100 / 3)


def test_loss_is_cross_entropy_with_optional_smoothing():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    batch = (torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
    out = make_task().loss(model, batch)
    assert out["loss"].ndim == 0 and out["output"].shape == (5, 3)
    torch.testing.assert_close(out["loss"], nn.functional.cross_entropy(model(batch[0]), batch[1]))
    out["loss"].backward()
    assert model[1].weight.grad is not None
    smoothed = make_task(label_smoothing=0.1).loss(model, batch)["loss"]
    assert smoothed.item() != pytest.approx(out["loss"].item())


@pytest.mark.parametrize("classes", [10, 20])
def test_evaluate_counts_top1_top5_and_loss(classes):
    # the "model" is the identity: the inputs are the logits
    n = 30
    target = torch.arange(n) % classes
    logits = torch.nn.functional.one_hot(target, classes).float()
    logits[:10] = torch.nn.functional.one_hot((target[:10] + 1) % classes, classes).float()
    for i in range(10):  # the first 10 are wrong at top-1; 5 of them right at top-2
        logits[i, target[i]] = 0.5 if i < 5 else -1.0
    batches = TensorBatches((logits, target), 8)
    out = make_task().evaluate(nn.Identity(), batches)
    assert out["top1"] == pytest.approx(100 * 20 / n)
    loss = nn.functional.cross_entropy(logits, target).item()
    assert out["loss"] == pytest.approx(loss, rel=1e-5)
    if classes > 10:
        assert out["top5"] == pytest.approx(100 * 25 / n)
    else:
        assert "top5" not in out


def test_digits_end_to_end_step():
    task = make_task(batch_size=32, eval_batch_size=200)
    data_cfg = OmegaConf.load(CONF / "data" / "digits.yaml")
    assert task.input_shape(data_cfg) == (1, 8, 8)
    data = task.build_data(data_cfg, seed=0)
    model = task.build_model(OmegaConf.load(CONF / "model" / "resnet20.yaml"), data_cfg)
    x, y = next(iter(data.train))
    assert x.shape == (32, 1, 8, 8)
    loss = task.loss(model, (x, y))["loss"]
    loss.backward()
    model.eval()
    with torch.no_grad():
        out = task.evaluate(model, data.val)
    assert set(out) == {"top1", "loss"} and 0.0 <= out["top1"] <= 100.0


def test_every_config_names_a_registered_thing():
    task_cfg = OmegaConf.load(CONF / "task" / "classification.yaml")
    assert task_cfg.task.name == "classification" and task_cfg.finetune.lr == 0.01
    assert isinstance(task_cfg.train.weight_decay, float)
    required = {"name", "shape", "num_classes", "val_fraction", "split_seed", "crop_pad", "flip"}
    for name in ("digits", "cifar10", "cifar100", "npz", "imagefolder"):
        cfg = OmegaConf.load(CONF / "data" / f"{name}.yaml")
        assert cfg.name == name and required <= set(cfg) and name in DATASETS
    names = [  # the outside-model families (torchvision/timm/python) need a model.arch/factory
        n
        for n in MODELS.names()
        if MODELS.info(n).get("task") == "classification" and "source" not in MODELS.info(n)
    ]
    data_cfg = OmegaConf.load(CONF / "data" / "cifar10.yaml")
    for name in names:
        model_cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
        assert model_cfg.name == name
        model = make_task().build_model(model_cfg, data_cfg)
        assert isinstance(model, nn.Module)
