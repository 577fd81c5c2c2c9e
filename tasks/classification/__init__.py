"""Image classification: CIFAR/digits data, CIFAR ResNets, VGG-16, MobileNetV2, top-k accuracy.

Importing the package registers the task, its datasets and its models.
"""

from __future__ import annotations

from tasks.classification import models
from tasks.classification.data import build_splits, load_arrays
from tasks.classification.metrics import accuracy, topk_correct
from tasks.classification.task import ClassificationTask

__all__ = [
    "ClassificationTask",
    "accuracy",
    "build_splits",
    "load_arrays",
    "models",
    "topk_correct",
]
