"""The Tensor methods' ops: arithmetic, reductions, reshapes and slicing, each with its backward.

They follow the functional ops' contract (``f_backward(grad_output, *inputs, **params)``, one
gradient per array input), so the one graph builder differentiates them too. An operand may be a
Python number, a plain array or a Tensor; broadcasting is undone in the backward by summing the
gradient over the broadcast axes.
"""

from __future__ import annotations

import array_api_extra as xpx

from .._backend import namespace_of
from .graph import differentiable

__all__ = ["add", "subtract", "multiply", "divide", "matmul", "negative", "power", "getitem", "sum", "mean", "reshape", "permute"]


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _xp(*values):
    return namespace_of(*[v for v in values if _is_array(v)])


def _unbroadcast(grad, operand, xp):
    """The gradient of a broadcast operand: summed over the axes broadcasting added or stretched;
    None for a Python number."""
    if not _is_array(operand):
        return None
    shape = tuple(operand.shape)
    if tuple(grad.shape) == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = xp.sum(grad, axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = xp.sum(grad, axis=stretched, keepdims=True)
    return grad


@differentiable("a", "b")
def add(a, b):
    return a + b


@add.defbackward
def add_backward(grad_output, a, b):
    xp = _xp(grad_output)
    return _unbroadcast(grad_output, a, xp), _unbroadcast(grad_output, b, xp)


@differentiable("a", "b")
def subtract(a, b):
    return a - b


@subtract.defbackward
def subtract_backward(grad_output, a, b):
    xp = _xp(grad_output)
    grad_b = _unbroadcast(grad_output, b, xp)
    return _unbroadcast(grad_output, a, xp), (None if grad_b is None else -grad_b)


@differentiable("a", "b")
def multiply(a, b):
    return a * b


@multiply.defbackward
def multiply_backward(grad_output, a, b):
    xp = _xp(grad_output)
    return _unbroadcast(grad_output * b, a, xp), _unbroadcast(grad_output * a, b, xp)


@differentiable("a", "b")
def divide(a, b):
    return a / b


@divide.defbackward
def divide_backward(grad_output, a, b):
    # d(a/b)/da = 1/b, d(a/b)/db = -a/b²
    xp = _xp(grad_output)
    grad_a = grad_output / b
    return _unbroadcast(grad_a, a, xp), _unbroadcast(-grad_a * a / b, b, xp)


@differentiable("a")
def negative(a):
    return -a


@negative.defbackward
def negative_backward(grad_output, a):
    return (-grad_output,)


@differentiable("a")
def power(a, *, exponent):
    return a**exponent


@power.defbackward
def power_backward(grad_output, a, *, exponent):
    # d(a^p)/da = p a^(p-1); p = 0 gives 0 even where a = 0 (0 · a^-1 would be NaN there).
    if exponent == 0:
        return (grad_output * 0.0,)
    return (grad_output * (exponent * a ** (exponent - 1)),)


@differentiable("a", "b")
def matmul(a, b):
    return _xp(a, b).matmul(a, b)


@matmul.defbackward
def matmul_backward(grad_output, a, b):
    """``a @ b`` → ``(g @ bᵀ, aᵀ @ g)``; a 1-D operand acts as a row (a) or column (b) vector."""
    xp = _xp(grad_output, a, b)
    a2 = xp.expand_dims(a, axis=0) if a.ndim == 1 else a
    b2 = xp.expand_dims(b, axis=-1) if b.ndim == 1 else b
    g = grad_output
    if a.ndim == 1:
        g = xp.expand_dims(g, axis=-2)
    if b.ndim == 1:
        g = xp.expand_dims(g, axis=-1)
    grad_a = xp.matmul(g, xp.matrix_transpose(b2))
    grad_b = xp.matmul(xp.matrix_transpose(a2), g)
    grad_a = grad_a[..., 0, :] if a.ndim == 1 else grad_a
    grad_b = grad_b[..., 0] if b.ndim == 1 else grad_b
    return _unbroadcast(grad_a, a, xp), _unbroadcast(grad_b, b, xp)


def _axes(dim, ndim):
    if dim is None:
        return tuple(range(ndim))
    return tuple(d % ndim for d in ((dim,) if isinstance(dim, int) else dim)) if ndim else ()


@differentiable("a")
def sum(a, *, dim=None, keepdim=False):  # noqa: A001 (the Tensor method's name)
    return _xp(a).sum(a, axis=None if dim is None else _axes(dim, a.ndim), keepdims=keepdim)


def _expand_back(grad_output, a, dim, keepdim, xp):
    """A reduction's gradient broadcast back over the reduced axes."""
    if not keepdim:
        for axis in sorted(_axes(dim, a.ndim)):
            grad_output = xp.expand_dims(grad_output, axis=axis)
    return xp.broadcast_to(grad_output, tuple(a.shape))


@sum.defbackward
def sum_backward(grad_output, a, *, dim=None, keepdim=False):
    xp = _xp(grad_output, a)
    return (_expand_back(grad_output, a, dim, keepdim, xp),)


@differentiable("a")
def mean(a, *, dim=None, keepdim=False):
    return _xp(a).mean(a, axis=None if dim is None else _axes(dim, a.ndim), keepdims=keepdim)


@mean.defbackward
def mean_backward(grad_output, a, *, dim=None, keepdim=False):
    xp = _xp(grad_output, a)
    count = 1
    for axis in _axes(dim, a.ndim):
        count *= a.shape[axis]
    return (_expand_back(grad_output, a, dim, keepdim, xp) / count,)


@differentiable("a")
def reshape(a, *, shape):
    return _xp(a).reshape(a, shape)


@reshape.defbackward
def reshape_backward(grad_output, a, *, shape):
    return (_xp(grad_output).reshape(grad_output, a.shape),)


@differentiable("a")
def permute(a, *, dims):
    return _xp(a).permute_dims(a, dims)


@permute.defbackward
def permute_backward(grad_output, a, *, dims):
    inverse = [0] * len(dims)
    for position, axis in enumerate(dims):
        inverse[axis % len(dims)] = position
    return (_xp(grad_output).permute_dims(grad_output, tuple(inverse)),)


@differentiable("a")
def getitem(a, *, index):
    return a[index]


@getitem.defbackward
def getitem_backward(grad_output, a, *, index):
    """Zeros of ``a``'s shape with the gradient put back at ``index`` (an immutable-array-safe
    update: JAX arrays too)."""
    xp = _xp(grad_output, a)
    zeros = xp.zeros(a.shape, dtype=grad_output.dtype, device=_device(grad_output))
    return (xpx.at(zeros, index).set(grad_output),)


def _device(x):
    import array_api_compat

    return array_api_compat.device(x)
