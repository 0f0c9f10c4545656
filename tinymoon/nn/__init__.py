"""tinymoon.nn — modules, parameters, layers, activations, losses, reversible blocks and initialisation.

    import tinymoon as tm
    from tinymoon import nn
    g = tm.generator(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128, generator=g), nn.ReLU(), nn.Linear(128, 10, generator=g))
    loss = nn.CrossEntropyLoss()(model(x), y)
"""
from . import functional, init, utils
from .activations import ELU, GELU, Activation, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .layers import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Identity, LayerNorm, Linear, MaxPool2d
from .losses import CrossEntropyLoss, MSELoss
from .module import Module, ModuleList, Parameter, Sequential
from .reversible import RevBlock

__all__ = ["functional", "init", "utils", "Module", "Parameter", "Sequential", "ModuleList", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d",
           "Flatten", "Identity", "LayerNorm", "BatchNorm2d", "Dropout", "Activation", "ReLU", "LeakyReLU", "ELU",
           "GELU", "SiLU", "Tanh", "Sigmoid", "Softplus", "Softmax", "LogSoftmax", "CrossEntropyLoss", "MSELoss",
           "RevBlock"]
