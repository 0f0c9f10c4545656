"""`import tinymoon.nn.functional as F`: the tensor-level functions under PyTorch's module name.

The same objects as `tm.<name>` (tinymoon.functional): conv2d, linear, relu, gelu, softmax, cross_entropy,
mse_loss, layer_norm, batch_norm, dropout, max_pool2d, ... — nothing here is a second implementation.
"""
from ..functional import *  # noqa: F401,F403
from ..functional import __all__  # noqa: F401
