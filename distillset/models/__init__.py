"""Models: one registry, ``get_model(name, in_shape, num_classes)``; every model has ``embed``."""
from . import classic, convnet, ntk, resnet, vgg  # noqa: F401  (fills the registry)
from .classic import MLP, AlexCifarNet, AlexNet, LeNet
from .convnet import ConvNet
from .init import Redraw, redraw_
from .registry import (MODELS, EmbedClassifier, canonical_model_name, check_model, get_model, has_batchnorm, list_models,
                       model_spec_name, register_model)
from .resnet import ResNet
from .vgg import VGG11

__all__ = [
    "MODELS",
    "EmbedClassifier",
    "MLP",
    "AlexCifarNet",
    "AlexNet",
    "ConvNet",
    "LeNet",
    "Redraw",
    "ResNet",
    "VGG11",
    "canonical_model_name",
    "check_model",
    "get_model",
    "has_batchnorm",
    "list_models",
    "model_spec_name",
    "redraw_",
    "register_model",
]
