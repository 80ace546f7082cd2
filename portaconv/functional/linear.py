"""linear and flatten, forward and backward."""

from __future__ import annotations

import math

from .. import primitives as P
from ..autograd.graph import differentiable
from .._backend import namespace_of
from .._shapes import _is_int
from .._validate import cached_geometry, check_float_arrays, check_shape

__all__ = ["linear", "linear_backward", "flatten", "flatten_backward"]


def _check_linear(op, input, weight, bias, xp, grad_output=None):
    check_float_arrays(op, xp, input=input, weight=weight, bias=bias, grad_output=grad_output)
    if weight.ndim != 2:
        raise ValueError(f"{op}: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if input.ndim < 1 or input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{op}: input of shape {tuple(input.shape)} must end in in_features={weight.shape[1]} "
            f"(weight shape {tuple(weight.shape)})"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"{op}: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if grad_output is not None:
        check_shape(op, "grad_output", grad_output, (*input.shape[:-1], weight.shape[0]))


@differentiable("input", "weight", "bias")
def linear(input, weight, bias=None):
    """Affine map ``input @ weight.T + bias``, as ``torch.nn.functional.linear``.

    Shapes
    ------
    input : (*, in_features)
    weight : (out_features, in_features)
    bias : (out_features,)
    output : (*, out_features)
    """
    xp = namespace_of(input, weight, bias)
    _check_linear("linear", input, weight, bias, xp)
    out = P.matmul(input, weight.T, xp) if input.ndim > 1 else P.matmul(weight, input, xp)  # (weight is 2-D)
    return out if bias is None else out + bias


@linear.defbackward
def linear_backward(grad_output, input, weight, bias=None):
    """Gradients of :func:`linear`: ``(grad_output @ weight, grad_outputᵀ @ input, sum(grad_output))``.

    Shapes
    ------
    grad_output : (*, out_features)
    returns : ((*, in_features), (out_features, in_features), (out_features,) or None)
    """
    xp = namespace_of(grad_output, input, weight, bias)
    _check_linear("linear_backward", input, weight, bias, xp, grad_output)
    out_features, in_features = weight.shape
    grad_2d = xp.reshape(grad_output, (-1, out_features))
    input_2d = xp.reshape(input, (-1, in_features))
    grad_input = xp.reshape(P.matmul(grad_2d, weight, xp), input.shape)
    grad_weight = P.matmul(grad_2d.T, input_2d, xp)
    grad_bias = None if bias is None else xp.sum(grad_2d, axis=0)
    return grad_input, grad_weight, grad_bias


@cached_geometry(shapes=1)
def _flat_shape(op, shape, start_dim, end_dim):
    ndim = max(len(shape), 1)
    for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
        if not _is_int(value) or not -ndim <= value < ndim:
            raise ValueError(f"{op}: {name}={value!r} is out of range for an input of shape {tuple(shape)}")
    start, end = start_dim % ndim, end_dim % ndim
    if start > end:
        raise ValueError(f"{op}: start_dim={start_dim} comes after end_dim={end_dim} for shape {tuple(shape)}")
    if not shape:
        return (1,)
    return (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])


@differentiable("input")
def flatten(input, start_dim=1, end_dim=-1):
    """Merge axes ``start_dim..end_dim`` into one, as ``torch.flatten``.

    The default ``start_dim=1`` keeps the batch axis, as ``torch.nn.Flatten`` (``torch.flatten``
    starts at 0).

    Shapes
    ------
    input : (N, C, H, W) → (N, C * H * W) with the defaults
    """
    xp = namespace_of(input)
    return xp.reshape(input, _flat_shape("flatten", tuple(input.shape), start_dim, end_dim))


@flatten.defbackward
def flatten_backward(grad_output, input, start_dim=1, end_dim=-1):
    """Gradient of :func:`flatten`: the gradient reshaped back to the input's shape.

    Shapes
    ------
    grad_output : flattened shape → ((input shape),)
    """
    xp = namespace_of(grad_output, input)
    check_shape("flatten_backward", "grad_output", grad_output, _flat_shape("flatten_backward", tuple(input.shape), start_dim, end_dim))
    return (xp.reshape(grad_output, input.shape),)
