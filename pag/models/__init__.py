"""Models: ResNet trunks with torchvision names, PAG, MP-PAG and the baselines."""

from pag.models.model import (
    DensePredictionModel,
    build_model,
    load_dense_weights,
)
from pag.models.resnet import ResNet, resnet, resnet18, resnet26, resnet50, resnet101

__all__ = [
    "DensePredictionModel",
    "ResNet",
    "build_model",
    "load_dense_weights",
    "resnet",
    "resnet18",
    "resnet26",
    "resnet50",
    "resnet101",
]
