"""Layers, containers and losses with explicit ``backward`` (no autograd)."""

from .layers import (
    AvgPool2d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Flatten,
    Linear,
    LocalResponseNorm,
    LogSoftmax,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from .loss import CrossEntropyLoss, NLLLoss
from .module import Module, Parameter

__all__ = [
    "AvgPool2d",
    "Conv2d",
    "ConvTranspose2d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "Linear",
    "LocalResponseNorm",
    "LogSoftmax",
    "MaxPool2d",
    "Module",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
]
