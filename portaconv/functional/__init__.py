"""Functional ops, torch.nn.functional names and NCHW layout; each ``f`` has ``f_backward``.

The backward contract: ``f_backward(grad_output, *inputs, **same_params)`` returns one gradient per
positional array input of ``f`` (``None`` where that input was ``None`` or is an integer target).
"""

from .conv import (
    conv2d,
    conv2d_backward,
    conv2d_grad_input,
    conv2d_grad_weight,
    conv_transpose2d,
    conv_transpose2d_backward,
)

__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "conv_transpose2d",
    "conv_transpose2d_backward",
]
