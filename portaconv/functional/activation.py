"""Elementwise activations: relu, tanh, sigmoid, leaky_relu, silu, forward and backward."""

from __future__ import annotations

import numbers

from .. import primitives as P
from ..autograd.graph import differentiable
from .._backend import namespace_of
from .._validate import check_float_arrays, check_shape

__all__ = [
    "relu",
    "relu_backward",
    "tanh",
    "tanh_backward",
    "sigmoid",
    "sigmoid_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "silu",
    "silu_backward",
]


def _checked(op, xp, input, grad_output=None):
    check_float_arrays(op, xp, input=input, grad_output=grad_output)
    if grad_output is not None:
        check_shape(op, "grad_output", grad_output, input.shape)


def _kept(result, xp):
    """A 0-d result as a 0-d array: NumPy's elementwise functions turn 0-d arrays into scalars."""
    return xp.asarray(result) if result.ndim == 0 else result


@differentiable("input")
def relu(input):
    """``max(input, 0)``; NaN stays NaN and −0.0 stays −0.0, as in torch.

    Shapes
    ------
    input : any → same shape
    """
    xp = namespace_of(input)
    _checked("relu", xp, input)
    return _kept(P.relu(input, xp), xp)


@relu.defbackward
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
    return (_kept(P.relu_grad(grad_output, input, xp), xp),)


@differentiable("input")
def tanh(input):
    """Hyperbolic tangent.

    Shapes
    ------
    input : any → same shape
    """
    xp = namespace_of(input)
    _checked("tanh", xp, input)
    return _kept(xp.tanh(input), xp)


@tanh.defbackward
def tanh_backward(grad_output, input):
    """Gradient of :func:`tanh`: ``grad_output * (1 - tanh(input)^2)``.

    Shapes
    ------
    grad_output, input : same shape → ((same shape),)
    """
    xp = namespace_of(grad_output, input)
    _checked("tanh_backward", xp, input, grad_output)
    y = xp.tanh(input)
    return (_kept(grad_output * (1.0 - y * y), xp),)


def _sigmoid(x, xp):
    # exp of a non-positive number never overflows; both branches are exact in their half.
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@differentiable("input")
def sigmoid(input):
    """Logistic function ``1 / (1 + exp(-input))``, computed without overflow.

    Shapes
    ------
    input : any → same shape
    """
    xp = namespace_of(input)
    _checked("sigmoid", xp, input)
    return _kept(_sigmoid(input, xp), xp)


@sigmoid.defbackward
def sigmoid_backward(grad_output, input):
    """Gradient of :func:`sigmoid`: ``grad_output * s * (1 - s)``.

    Shapes
    ------
    grad_output, input : same shape → ((same shape),)
    """
    xp = namespace_of(grad_output, input)
    _checked("sigmoid_backward", xp, input, grad_output)
    s = _sigmoid(input, xp)
    return (_kept(grad_output * s * (1.0 - s), xp),)


def _slope(op, negative_slope):
    """``negative_slope`` as a Python float (NumPy scalars accepted: never an array)."""
    if not isinstance(negative_slope, numbers.Real) or isinstance(negative_slope, bool):
        raise TypeError(f"{op}: negative_slope must be a real number, got {negative_slope!r}")
    return float(negative_slope)


@differentiable("input")
def leaky_relu(input, negative_slope=0.01):
    """``input`` where ``input > 0``, ``negative_slope * input`` elsewhere, as
    ``torch.nn.functional.leaky_relu``; NaN stays NaN.

    Parameters
    ----------
    input : array
    negative_slope : float
        Slope for non-positive inputs (a Python or NumPy real number).

    Shapes
    ------
    input : any → same shape
    """
    xp = namespace_of(input)
    slope = _slope("leaky_relu", negative_slope)
    _checked("leaky_relu", xp, input)
    return _kept(xp.where(input > 0, input, input * slope), xp)


@leaky_relu.defbackward
def leaky_relu_backward(grad_output, input, negative_slope=0.01):
    """Gradient of :func:`leaky_relu`: ``grad_output`` where ``input > 0``, ``negative_slope *
    grad_output`` elsewhere.

    At ``input == 0`` (and for NaN inputs) the slope is ``negative_slope``, torch's rule
    (``self > 0 ? grad : grad * negative_slope``).

    Shapes
    ------
    grad_output, input : same shape → ((same shape),)
    """
    xp = namespace_of(grad_output, input)
    slope = _slope("leaky_relu_backward", negative_slope)
    _checked("leaky_relu_backward", xp, input, grad_output)
    return (_kept(xp.where(input > 0, grad_output, grad_output * slope), xp),)


@differentiable("input")
def silu(input):
    """Sigmoid-weighted linear unit ``input * sigmoid(input)`` (swish), as
    ``torch.nn.functional.silu``; the sigmoid is computed without overflow.

    As in torch, ``silu(-inf)`` is NaN (``-inf * 0``) and ``silu(inf)`` is ``inf``.

    Shapes
    ------
    input : any → same shape
    """
    xp = namespace_of(input)
    _checked("silu", xp, input)
    return _kept(input * _sigmoid(input, xp), xp)


@silu.defbackward
def silu_backward(grad_output, input):
    """Gradient of :func:`silu`.

    With ``s = sigmoid(x)`` and ``s' = s (1 - s)``: ``d(x s)/dx = s + x s (1 - s)
    = s (1 + x (1 - s))``, torch's formula; ``s`` and ``1 - s`` are both exact in the tails, so
    large ``|x|`` gives 0 or 1 without overflow (``±inf`` give NaN, as in torch).

    Shapes
    ------
    grad_output, input : same shape → ((same shape),)
    """
    xp = namespace_of(grad_output, input)
    _checked("silu_backward", xp, input, grad_output)
    s = _sigmoid(input, xp)
    return (_kept(grad_output * s * (1.0 + input * (1.0 - s)), xp),)
