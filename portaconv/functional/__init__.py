"""Functional ops, torch.nn.functional names and NCHW layout; each ``f`` has ``f_backward``.

The backward contract: ``f_backward(grad_output, *inputs, **same_params)`` returns a tuple with one
gradient per positional array input of ``f`` (``None`` where that input was ``None`` or holds
integer targets).

Layout: ``conv`` (conv2d, conv_transpose2d), ``pooling`` (max/avg, adaptive average),
``normalization`` (LRN, batch_norm and its running-stat update), ``activation`` (relu, tanh,
sigmoid, leaky_relu, silu), ``dropout`` (dropout, dropout2d), ``linear`` (linear, flatten),
``loss`` (softmax family, nll_loss, cross_entropy, mse_loss, binary_cross_entropy_with_logits).
"""

from .activation import relu, relu_backward, sigmoid, sigmoid_backward, tanh, tanh_backward
from .activation import leaky_relu, leaky_relu_backward, silu, silu_backward
from .dropout import dropout, dropout2d, dropout2d_backward, dropout_backward
from .conv import (
    conv2d,
    conv2d_backward,
    conv2d_grad_input,
    conv2d_grad_weight,
    conv_transpose2d,
    conv_transpose2d_backward,
)
from .linear import flatten, flatten_backward, linear, linear_backward
from .loss import (
    cross_entropy,
    cross_entropy_backward,
    log_softmax,
    log_softmax_backward,
    nll_loss,
    nll_loss_backward,
    softmax,
    softmax_backward,
)
from .loss import binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_backward
from .loss import mse_loss, mse_loss_backward
from .normalization import local_response_norm, local_response_norm_backward
from .normalization import batch_norm, batch_norm_backward, batch_norm_running_stats
from .pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from .pooling import adaptive_avg_pool2d, adaptive_avg_pool2d_backward

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_running_stats",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_backward",
    "dropout",
    "dropout_backward",
    "dropout2d",
    "dropout2d_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "silu",
    "silu_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "conv2d",
    "conv2d_backward",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "cross_entropy",
    "cross_entropy_backward",
    "flatten",
    "flatten_backward",
    "linear",
    "linear_backward",
    "local_response_norm",
    "local_response_norm_backward",
    "log_softmax",
    "log_softmax_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "mse_loss",
    "mse_loss_backward",
    "nll_loss",
    "nll_loss_backward",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_backward",
    "tanh",
    "tanh_backward",
]
