"""Elementwise activations: relu, tanh, sigmoid, forward and backward."""

from __future__ import annotations

from array_api_compat import device

from .._backend import namespace_of
from .._validate import check_float_arrays, check_shape

__all__ = ["relu", "relu_backward", "tanh", "tanh_backward", "sigmoid", "sigmoid_backward"]


def _checked(op, xp, input, grad_output=None):
    check_float_arrays(op, xp, input=input, grad_output=grad_output)
    if grad_output is not None:
        check_shape(op, "grad_output", grad_output, input.shape)


def relu(input):
    """``max(input, 0)``; NaN stays NaN as in torch.

    Shapes
    ------
    input : any → same shape
    """
    xp = namespace_of(input)
    _checked("relu", xp, input)
    # The standard's maximum propagates NaN, as torch's relu does.
    return xp.maximum(input, xp.zeros((), dtype=input.dtype, device=device(input)))


def relu_backward(grad_output, input):
    """Gradient of :func:`relu`: ``grad_output`` except where ``input <= 0`` (0 there): a NaN input
    passes its gradient, as in torch.

    Shapes
    ------
    grad_output, input : same shape → ((same shape),)
    """
    xp = namespace_of(grad_output, input)
    _checked("relu_backward", xp, input, grad_output)
    # torch's threshold_backward zeroes where input <= 0; "input > 0" would also zero NaN inputs.
    return (xp.where(input <= 0, xp.zeros((), dtype=grad_output.dtype, device=device(grad_output)), grad_output),)


def tanh(input):
    """Hyperbolic tangent.

    Shapes
    ------
    input : any → same shape
    """
    xp = namespace_of(input)
    _checked("tanh", xp, input)
    return xp.tanh(input)


def tanh_backward(grad_output, input):
    """Gradient of :func:`tanh`: ``grad_output * (1 - tanh(input)^2)``.

    Shapes
    ------
    grad_output, input : same shape → ((same shape),)
    """
    xp = namespace_of(grad_output, input)
    _checked("tanh_backward", xp, input, grad_output)
    y = xp.tanh(input)
    return (grad_output * (1.0 - y * y),)


def _sigmoid(x, xp):
    # exp of a non-positive number never overflows; both branches are exact in their half.
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid(input):
    """Logistic function ``1 / (1 + exp(-input))``, computed without overflow.

    Shapes
    ------
    input : any → same shape
    """
    xp = namespace_of(input)
    _checked("sigmoid", xp, input)
    return _sigmoid(input, xp)


def sigmoid_backward(grad_output, input):
    """Gradient of :func:`sigmoid`: ``grad_output * s * (1 - s)``.

    Shapes
    ------
    grad_output, input : same shape → ((same shape),)
    """
    xp = namespace_of(grad_output, input)
    _checked("sigmoid_backward", xp, input, grad_output)
    s = _sigmoid(input, xp)
    return (grad_output * s * (1.0 - s),)
