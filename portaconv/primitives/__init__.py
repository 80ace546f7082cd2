"""The primitives every op is built from, each dispatched to its backend's kernel or reference.

``im2col`` / ``col2im`` (convolutions and their gradients), ``max_pool`` / ``max_pool_backward`` /
``max_pool_scatter`` (max pooling), ``window_sum`` / ``window_spread`` (average pooling),
``to_nchw`` (a product's (K, N·oh·ow) result into the NCHW output, plus bias), the fused
convolutions, and the elementwise and per-slice ops that small calls spend their time in
(``relu``, ``relu_grad``, ``log_softmax`` and its backward, ``channel_sum``). Each call looks up
its implementation in :mod:`~portaconv.primitives.dispatch` and runs it with the reference's
signature: arrays first, the :class:`~portaconv.primitives.window.Window`, ``xp`` last.
"""

from __future__ import annotations

from .dispatch import implementation as _implementation
from .window import Window, extent

__all__ = [
    "Window",
    "extent",
    "im2col",
    "col2im",
    "max_pool",
    "max_pool_backward",
    "max_pool_scatter",
    "window_sum",
    "window_spread",
    "to_nchw",
    "matmul",
    "relu",
    "relu_grad",
    "log_softmax",
    "log_softmax_backward",
    "channel_sum",
    "conv_im2col",
    "conv_im2col_backward",
]


def im2col(x, window, xp):
    return _implementation("im2col", xp, x.dtype)(x, window, xp)


def col2im(cols, shape, window, xp):
    return _implementation("col2im", xp, cols.dtype)(cols, shape, window, xp)


def max_pool(x, window, xp, *, taps=True):
    return _implementation("max_pool", xp, x.dtype)(x, window, xp, taps=taps)


def max_pool_backward(grad, x, window, xp):
    return _implementation("max_pool_backward", xp, x.dtype)(grad, x, window, xp)


def max_pool_scatter(grad, taps, shape, window, xp):
    return _implementation("max_pool_scatter", xp, grad.dtype)(grad, taps, shape, window, xp)


def window_sum(x, window, xp):
    return _implementation("window_sum", xp, x.dtype)(x, window, xp)


def window_spread(grad, shape, window, xp):
    return _implementation("window_spread", xp, grad.dtype)(grad, shape, window, xp)


def matmul(a, b, xp):
    return _implementation("matmul", xp, a.dtype)(a, b, xp)


def to_nchw(y, bias, shape, xp):
    return _implementation("to_nchw", xp, y.dtype)(y, bias, shape, xp)


def relu(x, xp):
    return _implementation("relu", xp, x.dtype)(x, xp)


def relu_grad(grad, x, xp):
    return _implementation("relu_grad", xp, grad.dtype)(grad, x, xp)


def log_softmax(x, axis, xp):
    return _implementation("log_softmax", xp, x.dtype)(x, axis, xp)


def log_softmax_backward(grad, x, axis, xp):
    return _implementation("log_softmax_backward", xp, grad.dtype)(grad, x, axis, xp)


def channel_sum(grad, xp):
    return _implementation("channel_sum", xp, grad.dtype)(grad, xp)


# ---- Winograd F(2×2, 3×3) ----------------------------------------------------------------------

from .winograd_reference import winograd_kernel, winograd_kernel_adjoint, winograd_tiles  # noqa: E402

__all__ += [
    "winograd_tiles",
    "winograd_input",
    "winograd_input_adjoint",
    "winograd_output",
    "winograd_output_adjoint",
    "winograd_kernel",
    "winograd_kernel_adjoint",
]


def winograd_input(x, window, xp):
    return _implementation("winograd_input", xp, x.dtype)(x, window, xp)


def winograd_input_adjoint(grad_v, shape, window, xp):
    return _implementation("winograd_input_adjoint", xp, grad_v.dtype)(grad_v, shape, window, xp)


def winograd_output(m, bias, shape, window, xp):
    return _implementation("winograd_output", xp, m.dtype)(m, bias, shape, window, xp)


def winograd_output_adjoint(grad, window, xp):
    return _implementation("winograd_output_adjoint", xp, grad.dtype)(grad, window, xp)


def conv_im2col(x, weight, bias, window, groups, xp, *, keep=False):
    return _implementation("conv_im2col", xp, x.dtype)(x, weight, bias, window, groups, xp, keep=keep)


def conv_im2col_backward(grad, x, weight, window, groups, input_shape, xp, *, input_grad=True, weight_grad=True, columns=None):
    return _implementation("conv_im2col_backward", xp, grad.dtype)(
        grad, x, weight, window, groups, input_shape, xp, input_grad=input_grad, weight_grad=weight_grad, columns=columns
    )
