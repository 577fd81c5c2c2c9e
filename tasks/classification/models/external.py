"""Classifiers from outside the repository, registered under three names:

    model=torchvision model.arch=<torchvision.models name>
    model=timm model.arch=<timm name>              (needs the `timm` extra)
    model=python model.factory=pkg.module:callable  (model.kwargs go to the callable)

The data config gives the input channels, the class count and the input size, as for every model.
"""

from __future__ import annotations

from harness.registry import MODELS
from tasks.classification.models.factories import python_model, timm_model, torchvision_model

__all__ = ["python_model", "timm_model", "torchvision_model"]

MODELS.register("torchvision", task="classification", source="torchvision.models")(
    torchvision_model
)
MODELS.register("timm", task="classification", source="timm")(timm_model)
MODELS.register("python", task="classification", source="model.factory")(python_model)
