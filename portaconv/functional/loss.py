"""The softmax family and the classification losses, forward and backward.

Targets are integer class indices; their slot in a backward's result is ``None``.
"""

from __future__ import annotations

import math

from array_api_compat import device as _device

from .._backend import namespace_of
from .._shapes import _is_int
from .._validate import check_choice, check_float_arrays, check_shape, is_eager

__all__ = [
    "softmax",
    "softmax_backward",
    "log_softmax",
    "log_softmax_backward",
    "nll_loss",
    "nll_loss_backward",
    "cross_entropy",
    "cross_entropy_backward",
]

_REDUCTIONS = ("mean", "sum", "none")


def _check_dim(op, input, dim):
    if not _is_int(dim) or not -max(input.ndim, 1) <= dim < max(input.ndim, 1):
        raise ValueError(f"{op}: dim={dim!r} is out of range for an input of shape {tuple(input.shape)}")


def _check_softmax(op, xp, input, dim, grad_output=None):
    check_float_arrays(op, xp, input=input, grad_output=grad_output)
    if grad_output is not None:
        check_shape(op, "grad_output", grad_output, input.shape)
    _check_dim(op, input, dim)


def _log_softmax(x, dim, xp):
    # Shift by the maximum so exp never overflows: logits of ±1e4 stay finite.
    shifted = x - xp.max(x, axis=dim, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=dim, keepdims=True))


def softmax(input, dim):
    """``exp(x) / sum(exp(x), dim)``, shifted by the maximum for stability.

    Shapes
    ------
    input : any → same shape
    """
    xp = namespace_of(input)
    _check_softmax("softmax", xp, input, dim)
    shifted = xp.exp(input - xp.max(input, axis=dim, keepdims=True))
    return shifted / xp.sum(shifted, axis=dim, keepdims=True)


def softmax_backward(grad_output, input, dim):
    """Gradient of :func:`softmax`: ``y * (g - sum(g * y, dim))``.

    Shapes
    ------
    grad_output, input : same shape → ((same shape),)
    """
    xp = namespace_of(grad_output, input)
    _check_softmax("softmax_backward", xp, input, dim, grad_output)
    y = xp.exp(_log_softmax(input, dim, xp))
    return (y * (grad_output - xp.sum(grad_output * y, axis=dim, keepdims=True)),)


def log_softmax(input, dim):
    """``x - logsumexp(x, dim)``, with the max shift.

    Shapes
    ------
    input : any → same shape
    """
    xp = namespace_of(input)
    _check_softmax("log_softmax", xp, input, dim)
    return _log_softmax(input, dim, xp)


def log_softmax_backward(grad_output, input, dim):
    """Gradient of :func:`log_softmax`: ``g - softmax(x) * sum(g, dim)``.

    Shapes
    ------
    grad_output, input : same shape → ((same shape),)
    """
    xp = namespace_of(grad_output, input)
    _check_softmax("log_softmax_backward", xp, input, dim, grad_output)
    probabilities = xp.exp(_log_softmax(input, dim, xp))
    return (grad_output - probabilities * xp.sum(grad_output, axis=dim, keepdims=True),)


def _targets(op, input, target, reduction, ignore_index, xp):
    """Validate; return the one-hot mask (class axis 1, False for ignored samples) and the
    kept-sample mask, both boolean."""
    check_float_arrays(op, xp, input=input)
    check_choice(op, "reduction", reduction, _REDUCTIONS)
    if not _is_int(ignore_index):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    if not xp.isdtype(target.dtype, "integral"):
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {target.dtype}")
    if input.ndim < 1:
        raise ValueError(f"{op}: input must be (N, C), (N, C, d1, ...) or (C,), got a scalar")
    unbatched = input.ndim == 1
    if unbatched:
        input = xp.expand_dims(input, axis=0)
        check_shape(op, "target", target, ())
        target = xp.reshape(target, (1,))
    expected = (input.shape[0], *input.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{op}: target has shape {tuple(target.shape)}, expected {expected} for input of shape {tuple(input.shape)}"
        )
    classes = input.shape[1]
    kept = target != ignore_index
    if is_eager(kept):
        # Values are only checked on eager arrays (concrete JAX arrays included): under jax.jit (or
        # on Dask) reading them would be a host synchronization the trace cannot make; there an
        # out-of-range target selects no class. ``kept``, not ``target``: inside a jit trace even a
        # closed-over concrete target gives traced comparisons.
        _check_target_range(op, target, kept, classes, ignore_index, xp)
    class_axis = xp.reshape(
        xp.arange(classes, dtype=target.dtype, device=_device(target)), (1, classes) + (1,) * (input.ndim - 2)
    )
    # Boolean: the losses pick the target's entry with where, never by multiplying (0 · -inf = NaN
    # for a log-probability of -inf in a class that is not the target).
    hot = (xp.expand_dims(target, axis=1) == class_axis) & xp.expand_dims(kept, axis=1)
    return input, hot, kept, unbatched


def _check_target_range(op, target, kept, classes, ignore_index, xp):
    bad = kept & ((target < 0) | (target >= classes))
    if bool(xp.any(bad)):
        values = xp.where(bad, target, xp.zeros_like(target))
        high = int(xp.max(values))
        wrong = high if high >= classes else int(xp.min(values))
        raise ValueError(
            f"{op}: target value {wrong} is out of range for {classes} classes "
            f"(expected 0..{classes - 1} or ignore_index={ignore_index})"
        )


def _reduce(losses, kept, reduction, unbatched, xp):
    if reduction == "none":
        return losses[0, ...] if unbatched else losses
    # NumPy reductions give scalars; asarray keeps a 0-d array of the input's library.
    total = xp.sum(losses)
    if reduction == "sum":
        return xp.asarray(total)
    count = xp.sum(xp.astype(kept, losses.dtype))
    # Every target ignored: torch's mean is 0/0 = NaN; dividing by a NaN count gives it without
    # NumPy's "invalid value" warning.
    return xp.asarray(total / xp.where(count > 0, count, math.nan))


def _grad_scale(grad_output, kept, reduction, unbatched, xp, op, loss_shape):
    """Per-sample factor of the loss gradient, broadcastable over the class axis."""
    kept = xp.astype(kept, grad_output.dtype)
    if reduction == "none":
        check_shape(op, "grad_output", grad_output, loss_shape[1:] if unbatched else loss_shape)
        grad = xp.reshape(grad_output, loss_shape)
        return xp.expand_dims(grad * kept, axis=1)
    check_shape(op, "grad_output", grad_output, ())
    if reduction == "mean":
        # Every target ignored: torch's loss is NaN but its gradient is zero (no kept sample).
        count = xp.sum(kept)
        grad_output = grad_output / xp.where(count > 0, count, 1.0)
    return xp.expand_dims(kept, axis=1) * grad_output


def nll_loss(input, target, reduction="mean", ignore_index=-100):
    """Negative log-likelihood of log-probabilities, as ``torch.nn.functional.nll_loss``.

    ``loss_i = -input[i, target_i]``; samples whose target is ``ignore_index`` count neither in the
    sum nor in the mean's denominator (all ignored → ``nan`` for ``"mean"``, as torch).

    Shapes
    ------
    input : (N, C), (N, C, d1, ...) or (C,)
    target : (N,), (N, d1, ...) or () integer
    output : () or, with reduction="none", target's shape

    Raises
    ------
    ValueError
        For a target outside ``0..C-1`` that is not ``ignore_index``: checked on eager arrays only
        (NumPy, torch, CuPy, concrete JAX arrays). Under ``jax.jit`` or on lazy arrays the values
        are not read (that would be a host synchronization); such a target selects no class.
    """
    xp = namespace_of(input, target)
    x, hot, kept, unbatched = _targets("nll_loss", input, target, reduction, ignore_index, xp)
    losses = -xp.sum(xp.where(hot, x, 0.0), axis=1)
    return _reduce(losses, kept, reduction, unbatched, xp)


def nll_loss_backward(grad_output, input, target, reduction="mean", ignore_index=-100):
    """Gradient of :func:`nll_loss`: ``-one_hot(target) * scale`` (scale 1/count for "mean").

    Shapes
    ------
    returns : ((input shape), None)

    Target values are checked as in the forward: on eager arrays only.
    """
    xp = namespace_of(grad_output, input, target)
    op = "nll_loss_backward"
    x, hot, kept, unbatched = _targets(op, input, target, reduction, ignore_index, xp)
    check_float_arrays(op, xp, input=input, grad_output=grad_output)
    scale = _grad_scale(grad_output, kept, reduction, unbatched, xp, op, kept.shape)
    grad = -xp.astype(hot, x.dtype) * scale
    return (grad[0, ...] if unbatched else grad), None


def _check_smoothing(op, label_smoothing):
    if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing!r}")


def cross_entropy(input, target, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    """Cross entropy of logits and class indices, as ``torch.nn.functional.cross_entropy``.

    ``loss_i = (1 - eps) * (-log_softmax(x)_i[t_i]) + eps / C * sum_c (-log_softmax(x)_i[c])``.

    Shapes
    ------
    input : (N, C), (N, C, d1, ...) or (C,)
    target : (N,), (N, d1, ...) or () integer
    output : () or, with reduction="none", target's shape

    Raises
    ------
    ValueError
        For a target outside ``0..C-1`` that is not ``ignore_index``: checked on eager arrays only
        (NumPy, torch, CuPy, concrete JAX arrays). Under ``jax.jit`` or on lazy arrays the values
        are not read (that would be a host synchronization); such a target selects no class.
    """
    xp = namespace_of(input, target)
    op = "cross_entropy"
    _check_smoothing(op, label_smoothing)
    x, hot, kept, unbatched = _targets(op, input, target, reduction, ignore_index, xp)
    log_probabilities = _log_softmax(x, 1, xp)
    losses = -xp.sum(xp.where(hot, log_probabilities, 0.0), axis=1)
    if label_smoothing:
        smooth = xp.where(kept, -xp.sum(log_probabilities, axis=1), 0.0) / x.shape[1]
        losses = (1.0 - label_smoothing) * losses + label_smoothing * smooth
    return _reduce(losses, kept, reduction, unbatched, xp)


def cross_entropy_backward(grad_output, input, target, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    """Gradient of :func:`cross_entropy`: ``(softmax(x) - (1 - eps) one_hot - eps / C) * scale``.

    Shapes
    ------
    returns : ((input shape), None)

    Target values are checked as in the forward: on eager arrays only.
    """
    xp = namespace_of(grad_output, input, target)
    op = "cross_entropy_backward"
    _check_smoothing(op, label_smoothing)
    x, hot, kept, unbatched = _targets(op, input, target, reduction, ignore_index, xp)
    check_float_arrays(op, xp, input=input, grad_output=grad_output)
    scale = _grad_scale(grad_output, kept, reduction, unbatched, xp, op, kept.shape)
    probabilities = xp.exp(_log_softmax(x, 1, xp))
    grad = (probabilities - (1.0 - label_smoothing) * xp.astype(hot, x.dtype) - label_smoothing / x.shape[1]) * scale
    return (grad[0, ...] if unbatched else grad), None
