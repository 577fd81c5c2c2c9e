"""Classification models; importing this package registers them in `MODELS`."""

from __future__ import annotations

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
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet164",
    "vgg16",
]
