"""Classification models; importing this package registers them in `MODELS` (the built-in nets
and the `torchvision`, `timm` and `python` sources of models from outside the repository)."""

from __future__ import annotations

from tasks.classification.models.external import python_model, timm_model, torchvision_model
from tasks.classification.models.mobilenetv2 import MobileNetV2, mobilenetv2
from tasks.classification.models.resnet_cifar import (
    CifarResNet,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
    resnet164,
)
from tasks.classification.models.vgg import VGG, vgg16

__all__ = [
    "VGG",
    "CifarResNet",
    "MobileNetV2",
    "mobilenetv2",
    "python_model",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet164",
    "timm_model",
    "torchvision_model",
    "vgg16",
]
