"""The softmax family and the losses, forward and backward, with torch.nn.functional's semantics.

Gradient slots: integer class-index targets and per-class / per-element ``weight`` arrays get
``None`` (torch does not differentiate them either); floating targets (cross_entropy's class
probabilities, mse_loss, binary_cross_entropy_with_logits) get their gradient, as in torch.
"""

from __future__ import annotations

import math
import numbers
import warnings

from array_api_compat import device as _device

from .. import primitives as P
from ..autograd.graph import differentiable
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
    "mse_loss",
    "mse_loss_backward",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_backward",
]

_REDUCTIONS = ("mean", "sum", "none")


def _is_empty(x) -> bool:
    return 0 in x.shape


def _numel(shape) -> int:
    return math.prod(shape)


def _check_dim(op, input, dim):
    if not _is_int(dim) or not -max(input.ndim, 1) <= dim < max(input.ndim, 1):
        raise ValueError(f"{op}: dim={dim!r} is out of range for an input of shape {tuple(input.shape)}")


def _check_softmax(op, xp, input, dim, grad_output=None):
    check_float_arrays(op, xp, input=input, grad_output=grad_output)
    if grad_output is not None:
        check_shape(op, "grad_output", grad_output, input.shape)
    _check_dim(op, input, dim)


def _softmax_family(function, xp, input, dim, *more):
    """Run ``function(input, dim, *more, xp)`` the way torch does on the edge shapes: a 0-d input is a
    single class (softmax 1, log_softmax 0), a zero-size input gives an empty result."""
    if _is_empty(input):
        return xp.zeros_like(input)
    if input.ndim == 0:
        flat = [xp.reshape(a, (1,)) for a in (input, *more)]
        return xp.reshape(function(flat[0], 0, *flat[1:], xp), ())
    return function(input, dim, *more, xp)


def _softmax(x, dim, xp):
    shifted = xp.exp(x - xp.max(x, axis=dim, keepdims=True))
    return shifted / xp.sum(shifted, axis=dim, keepdims=True)


def _softmax_backward(x, dim, grad, xp):
    y = xp.exp(P.log_softmax(x, dim, xp))
    return y * (grad - xp.sum(grad * y, axis=dim, keepdims=True))


def _log_softmax_backward(x, dim, grad, xp):
    return P.log_softmax_backward(grad, x, dim, xp)


@differentiable("input")
def softmax(input, dim):
    """``exp(x) / sum(exp(x), dim)``, shifted by the maximum for stability.

    A 0-d input gives 1 (``dim`` 0 or -1), a zero-size input an empty result, as torch.

    Shapes
    ------
    input : any → same shape
    """
    xp = namespace_of(input)
    _check_softmax("softmax", xp, input, dim)
    return _softmax_family(_softmax, xp, input, dim)


@softmax.defbackward
def softmax_backward(grad_output, input, dim):
    """Gradient of :func:`softmax`: ``y * (g - sum(g * y, dim))``.

    Shapes
    ------
    grad_output, input : same shape → ((same shape),)
    """
    xp = namespace_of(grad_output, input)
    _check_softmax("softmax_backward", xp, input, dim, grad_output)

    return (_softmax_family(_softmax_backward, xp, input, dim, grad_output),)


@differentiable("input")
def log_softmax(input, dim):
    """``x - logsumexp(x, dim)``, with the max shift.

    A 0-d input gives 0 (``dim`` 0 or -1), a zero-size input an empty result, as torch.

    Shapes
    ------
    input : any → same shape
    """
    xp = namespace_of(input)
    _check_softmax("log_softmax", xp, input, dim)
    return _softmax_family(P.log_softmax, xp, input, dim)


@log_softmax.defbackward
def log_softmax_backward(grad_output, input, dim):
    """Gradient of :func:`log_softmax`: ``g - softmax(x) * sum(g, dim)``.

    Shapes
    ------
    grad_output, input : same shape → ((same shape),)
    """
    xp = namespace_of(grad_output, input)
    _check_softmax("log_softmax_backward", xp, input, dim, grad_output)

    return (_softmax_family(_log_softmax_backward, xp, input, dim, grad_output),)


# ---- nll_loss and cross_entropy ----------------------------------------------------------------


def _class_view(weight, ndim, xp):
    """(C,) class weights shaped to broadcast over a batched input's class axis 1."""
    return xp.reshape(weight, (1, weight.shape[0]) + (1,) * (ndim - 2))


def _check_input(op, xp, input, reduction, weight):
    check_float_arrays(op, xp, input=input, weight=weight)
    check_choice(op, "reduction", reduction, _REDUCTIONS)
    if input.ndim < 1:
        raise ValueError(f"{op}: input must be (N, C), (N, C, d1, ...) or (C,), got a scalar")
    if weight is not None:
        classes = input.shape[0] if input.ndim == 1 else input.shape[1]
        if tuple(weight.shape) != (classes,):
            raise ValueError(
                f"{op}: weight has shape {tuple(weight.shape)}, expected ({classes},): one weight per class "
                f"of the input of shape {tuple(input.shape)}"
            )


class _Indices:
    """A validated class-index target: the batched input ``x``, the one-hot mask ``hot`` (class
    axis 1, False for ignored samples), the kept-sample mask ``kept``, each sample's weight
    ``sample_weight`` (``weight[target]``, 0 where ignored) and whether the input was unbatched."""

    __slots__ = ("x", "hot", "kept", "sample_weight", "unbatched")


def _targets(op, input, target, weight, reduction, ignore_index, xp):
    """Validate an integer class-index target (and the class weights) against ``input``."""
    _check_input(op, xp, input, reduction, weight)
    if not _is_int(ignore_index):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    if not xp.isdtype(target.dtype, "integral"):
        detail = ""
        if op.startswith("cross_entropy") and xp.isdtype(target.dtype, "real floating"):
            detail = (
                f"; a floating target holds class probabilities and must have the input's shape "
                f"{tuple(input.shape)}, got {tuple(target.shape)}"
            )
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {target.dtype}{detail}")
    t = _Indices()
    t.unbatched = input.ndim == 1
    if t.unbatched:
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
    t.hot = (xp.expand_dims(target, axis=1) == class_axis) & xp.expand_dims(kept, axis=1)
    t.x, t.kept = input, kept
    if weight is None:
        t.sample_weight = xp.astype(kept, input.dtype)
    else:
        t.sample_weight = xp.sum(xp.where(t.hot, _class_view(weight, input.ndim, xp), 0.0), axis=1)
    return t


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


def _reduce(losses, t: _Indices, reduction, xp):
    if reduction == "none":
        return xp.asarray(losses[0, ...] if t.unbatched else losses)
    # NumPy reductions give scalars; asarray keeps a 0-d array of the input's library.
    total = xp.sum(losses)
    if reduction == "sum":
        return xp.asarray(total)
    # torch's (weighted) mean: divided by the summed weights of the kept targets (their count
    # without weights). Every target ignored: torch's 0/0 = NaN; dividing by NaN gives it without
    # NumPy's "invalid value" warning.
    count = xp.sum(xp.astype(t.kept, losses.dtype))
    return xp.asarray(total / xp.where(count > 0, xp.sum(t.sample_weight), math.nan))


def _loss_grad(op, grad_output, reduction, unbatched, loss_shape, xp, denominator=None):
    """``grad_output`` as a per-sample factor broadcastable over the class axis 1: reshaped for
    "none", divided by ``denominator`` for "mean" (0-d for "sum" and "mean")."""
    if reduction == "none":
        check_shape(op, "grad_output", grad_output, loss_shape[1:] if unbatched else loss_shape)
        return xp.expand_dims(xp.reshape(grad_output, loss_shape), axis=1)
    check_shape(op, "grad_output", grad_output, ())
    return grad_output / denominator if reduction == "mean" else grad_output


def _index_grad_scale(op, grad_output, t: _Indices, reduction, xp):
    denominator = None
    if reduction == "mean":
        # Every target ignored: torch's loss is NaN but its gradient is zero (no kept sample).
        count = xp.sum(xp.astype(t.kept, grad_output.dtype))
        denominator = xp.where(count > 0, xp.sum(t.sample_weight), 1.0)
    return _loss_grad(op, grad_output, reduction, t.unbatched, t.kept.shape, xp, denominator)


@differentiable("input", "target", "weight")
def nll_loss(input, target, weight=None, reduction="mean", ignore_index=-100):
    """Negative log-likelihood of log-probabilities, as ``torch.nn.functional.nll_loss``.

    ``loss_i = -weight[t_i] * input[i, t_i]`` (``weight`` 1 when absent); samples whose target is
    ``ignore_index`` count neither in the sum nor in the mean, which divides by the summed weights
    of the kept targets (all ignored → ``nan`` for ``"mean"``, as torch).

    Shapes
    ------
    input : (N, C), (N, C, d1, ...) or (C,)
    target : (N,), (N, d1, ...) or () integer
    weight : (C,) or None, the input's dtype; not differentiated (its gradient slot is None)
    output : () or, with reduction="none", target's shape

    Raises
    ------
    ValueError
        For a target outside ``0..C-1`` that is not ``ignore_index``: checked on eager arrays only
        (NumPy, torch, CuPy, concrete JAX arrays). Under ``jax.jit`` or on lazy arrays the values
        are not read (that would be a host synchronization); such a target selects no class.
    """
    xp = namespace_of(input, target, weight)
    t = _targets("nll_loss", input, target, weight, reduction, ignore_index, xp)
    losses = -xp.sum(xp.where(t.hot, t.x, 0.0), axis=1)
    if weight is not None:
        losses = losses * t.sample_weight
    return _reduce(losses, t, reduction, xp)


@nll_loss.defbackward
def nll_loss_backward(grad_output, input, target, weight=None, reduction="mean", ignore_index=-100):
    """Gradient of :func:`nll_loss`: ``-one_hot(target) * weight[target] * scale`` (scale: 1 over
    the summed kept weights for "mean").

    Shapes
    ------
    returns : ((input shape), None, None)

    Target values are checked as in the forward: on eager arrays only.
    """
    xp = namespace_of(grad_output, input, target, weight)
    op = "nll_loss_backward"
    t = _targets(op, input, target, weight, reduction, ignore_index, xp)
    check_float_arrays(op, xp, input=input, grad_output=grad_output)
    scale = _index_grad_scale(op, grad_output, t, reduction, xp)
    grad = -xp.astype(t.hot, t.x.dtype) * (xp.expand_dims(t.sample_weight, axis=1) * scale)
    return xp.asarray(grad[0, ...] if t.unbatched else grad), None, None


def _check_smoothing(op, label_smoothing):
    if (
        not isinstance(label_smoothing, numbers.Real)
        or isinstance(label_smoothing, bool)
        or not 0.0 <= label_smoothing <= 1.0
    ):
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return float(label_smoothing)  # a NumPy float32 scalar would round the arithmetic to float32


def _is_probability_target(xp, target):
    return xp.isdtype(target.dtype, "real floating")


def _probabilities(op, input, target, weight, reduction, ignore_index, label_smoothing, xp):
    """Validate a class-probability target; return the batched input, the smoothed and weighted
    target ``q * weight`` and whether the input was unbatched."""
    _check_input(op, xp, input, reduction, weight)
    check_float_arrays(op, xp, input=input, target=target)
    if not _is_int(ignore_index):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    if ignore_index >= 0:
        raise ValueError(
            f"{op}: ignore_index={ignore_index} is not supported with class-probability targets "
            "(a floating target of the input's shape); leave it negative (default -100), as torch requires"
        )
    unbatched = input.ndim == 1
    x, q = (xp.expand_dims(input, axis=0), xp.expand_dims(target, axis=0)) if unbatched else (input, target)
    if label_smoothing:
        q = q * (1.0 - label_smoothing) + label_smoothing / x.shape[1]
    weighted = q if weight is None else q * _class_view(weight, x.ndim, xp)
    return x, weighted, unbatched


def _samples(x) -> int:
    """The number of samples of a batched (N, C, d1, ...) input: its size over C."""
    return _numel(x.shape[:1] + x.shape[2:])


@differentiable("input", "target", "weight")
def cross_entropy(input, target, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    """Cross entropy of logits and a target, as ``torch.nn.functional.cross_entropy``.

    Class-index target (integer dtype): with ``lp = log_softmax(x)``, ``w`` the class weights
    (1 when absent) and ``eps = label_smoothing``,
    ``loss_i = (1 - eps) * w[t_i] * (-lp_i[t_i]) + eps / C * sum_c w_c * (-lp_i[c])``, 0 for an
    ignored sample; "mean" divides the sum by the summed ``w[t_i]`` of the kept samples (torch's
    formula: the smoothing term is weighted per class, not by the target's weight).

    Class-probability target (floating, the input's shape): ``q = (1 - eps) * target + eps / C``,
    ``loss_i = -sum_c w_c * q_ic * lp_i[c]``; "mean" divides by the number of samples (N times
    the spatial size), never by the weights; ``ignore_index`` must stay negative. The target is
    differentiated (its gradient is ``-(1 - eps) * w * lp`` times the loss gradient).

    Shapes
    ------
    input : (N, C), (N, C, d1, ...) or (C,)
    target : (N,), (N, d1, ...) or () integer, or the input's shape floating
    weight : (C,) or None, the input's dtype; not differentiated (its gradient slot is None)
    output : () or, with reduction="none", (N, d1, ...) (or () for a (C,) input)

    Raises
    ------
    ValueError
        For a target outside ``0..C-1`` that is not ``ignore_index``: checked on eager arrays only
        (NumPy, torch, CuPy, concrete JAX arrays). Under ``jax.jit`` or on lazy arrays the values
        are not read (that would be a host synchronization); such a target selects no class.
    """
    xp = namespace_of(input, target, weight)
    op = "cross_entropy"
    label_smoothing = _check_smoothing(op, label_smoothing)
    if _is_probability_target(xp, target) and tuple(target.shape) == tuple(input.shape):
        x, weighted, unbatched = _probabilities(op, input, target, weight, reduction, ignore_index, label_smoothing, xp)
        losses = -xp.sum(P.log_softmax(x, 1, xp) * weighted, axis=1)
        if reduction == "none":
            return xp.asarray(losses[0, ...] if unbatched else losses)
        total = xp.sum(losses)
        if reduction == "sum":
            return xp.asarray(total)
        samples = _samples(x)
        return xp.asarray(total / (samples if samples else math.nan))  # no sample: NaN, as torch
    t = _targets(op, input, target, weight, reduction, ignore_index, xp)
    log_probabilities = P.log_softmax(t.x, 1, xp)
    losses = -xp.sum(xp.where(t.hot, log_probabilities, 0.0), axis=1)
    if weight is not None:
        losses = losses * t.sample_weight
    if label_smoothing:
        if weight is not None:
            log_probabilities = log_probabilities * _class_view(weight, t.x.ndim, xp)
        smooth = xp.where(t.kept, -xp.sum(log_probabilities, axis=1), 0.0) / t.x.shape[1]
        losses = (1.0 - label_smoothing) * losses + label_smoothing * smooth
    return _reduce(losses, t, reduction, xp)


@cross_entropy.defbackward
def cross_entropy_backward(
    grad_output, input, target, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0
):
    """Gradient of :func:`cross_entropy`.

    Class indices: ``((1 - eps) w[t] (p - one_hot) + eps / C (p sum(w) - w)) * scale`` with
    ``p = softmax(x)`` (``(p - (1 - eps) one_hot - eps / C) * scale`` without weights).
    Class probabilities, with ``r = w * q``: ``(p * sum(r) - r) * scale`` for the input and
    ``-(1 - eps) * w * log_softmax(x) * scale`` for the target.

    Shapes
    ------
    returns : ((input shape), None or (target shape) for a probability target, None)

    Target values are checked as in the forward: on eager arrays only.
    """
    xp = namespace_of(grad_output, input, target, weight)
    op = "cross_entropy_backward"
    label_smoothing = _check_smoothing(op, label_smoothing)
    if _is_probability_target(xp, target) and tuple(target.shape) == tuple(input.shape):
        x, weighted, unbatched = _probabilities(op, input, target, weight, reduction, ignore_index, label_smoothing, xp)
        check_float_arrays(op, xp, input=input, grad_output=grad_output)
        loss_shape = (x.shape[0], *x.shape[2:])
        scale = _loss_grad(op, grad_output, reduction, unbatched, loss_shape, xp, max(_samples(x), 1))
        log_probabilities = P.log_softmax(x, 1, xp)
        grad_input = (xp.exp(log_probabilities) * xp.sum(weighted, axis=1, keepdims=True) - weighted) * scale
        grad_target = log_probabilities * (-(1.0 - label_smoothing))
        if weight is not None:
            grad_target = grad_target * _class_view(weight, x.ndim, xp)
        grad_target = grad_target * scale
        if unbatched:
            grad_input, grad_target = grad_input[0, ...], grad_target[0, ...]
        return xp.asarray(grad_input), xp.asarray(grad_target), None
    t = _targets(op, input, target, weight, reduction, ignore_index, xp)
    check_float_arrays(op, xp, input=input, grad_output=grad_output)
    scale = _index_grad_scale(op, grad_output, t, reduction, xp)
    probabilities = xp.exp(P.log_softmax(t.x, 1, xp))
    hot = xp.astype(t.hot, t.x.dtype)
    classes = t.x.shape[1]
    if weight is None:
        kept = xp.expand_dims(xp.astype(t.kept, t.x.dtype), axis=1)
        grad = (probabilities - (1.0 - label_smoothing) * hot - label_smoothing / classes) * (kept * scale)
    else:
        grad = (1.0 - label_smoothing) * xp.expand_dims(t.sample_weight, axis=1) * (probabilities - hot)
        if label_smoothing:
            w = _class_view(weight, t.x.ndim, xp)
            kept = xp.expand_dims(xp.astype(t.kept, t.x.dtype), axis=1)
            grad = grad + (label_smoothing / classes) * kept * (probabilities * xp.sum(weight) - w)
        grad = grad * scale
    return xp.asarray(grad[0, ...] if t.unbatched else grad), None, None


# ---- mse_loss and binary_cross_entropy_with_logits ---------------------------------------------


def _reduce_elementwise(losses, reduction, xp):
    """torch's ``apply_loss_reduction``: the mean over every element (NaN when there are none)."""
    if reduction == "none":
        return xp.asarray(losses)
    total = xp.sum(losses)
    if reduction == "sum":
        return xp.asarray(total)
    count = _numel(losses.shape)
    return xp.asarray(total / (count if count else math.nan))


def _elementwise_grad(op, grad_output, reduction, shape, xp):
    """``grad_output`` as a factor broadcastable over the loss of ``shape``."""
    if reduction == "none":
        check_shape(op, "grad_output", grad_output, shape)
        return grad_output
    check_shape(op, "grad_output", grad_output, ())
    return grad_output / max(_numel(shape), 1) if reduction == "mean" else grad_output


def _broadcast_shapes(a, b):
    """The standard's broadcasting of two shapes (pure ints); ValueError when they do not."""
    a, b = (1,) * (len(b) - len(a)) + a, (1,) * (len(a) - len(b)) + b
    if any(m != n and 1 not in (m, n) for m, n in zip(a, b)):
        raise ValueError(f"shapes {a} and {b} do not broadcast")
    return tuple(n if m == 1 else m for m, n in zip(a, b))


def _broadcast_shape(op, name, a, b, *, into=None):
    try:
        shape = _broadcast_shapes(tuple(a.shape), tuple(b.shape))
    except ValueError:
        shape = None
    if shape is None or (into is not None and shape != tuple(into)):
        target = f"the input's shape {tuple(b.shape)}" if into is not None else f"input of shape {tuple(b.shape)}"
        raise ValueError(f"{op}: {name} has shape {tuple(a.shape)}, which does not broadcast to {target}")
    return shape


def _unbroadcast(grad, shape, xp):
    """Sum ``grad`` over the axes that broadcasting added to an array of ``shape``."""
    shape = tuple(shape)
    if tuple(grad.shape) == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1
    )
    return xp.reshape(xp.sum(grad, axis=axes), shape) if axes else xp.reshape(grad, shape)


def _check_mse(op, xp, input, target, reduction, grad_output=None):
    check_float_arrays(op, xp, input=input, target=target, grad_output=grad_output)
    check_choice(op, "reduction", reduction, _REDUCTIONS)
    return _broadcast_shape(op, "target", target, input)


@differentiable("input", "target")
def mse_loss(input, target, reduction="mean"):
    """Mean squared error ``(input - target)^2``, as ``torch.nn.functional.mse_loss``.

    Shapes
    ------
    input : any
    target : the input's shape; another shape broadcast with it warns, as torch does
    output : () or, with reduction="none", the broadcast shape

    "mean" averages over every element (NaN for zero-size inputs, as torch).
    """
    xp = namespace_of(input, target)
    op = "mse_loss"
    shape = _check_mse(op, xp, input, target, reduction)
    if tuple(target.shape) != tuple(input.shape):
        warnings.warn(
            f"{op}: target shape {tuple(target.shape)} differs from input shape {tuple(input.shape)}; they are "
            f"broadcast to {shape}, as torch does (with the same warning), which is rarely intended",
            UserWarning,
            stacklevel=2,
        )
    difference = input - target
    return _reduce_elementwise(difference * difference, reduction, xp)


@mse_loss.defbackward
def mse_loss_backward(grad_output, input, target, reduction="mean"):
    """Gradient of :func:`mse_loss`: ``2 (input - target) * scale`` for the input, its negative
    for the target (each summed over the axes broadcasting added).

    Shapes
    ------
    returns : ((input shape), (target shape))
    """
    xp = namespace_of(grad_output, input, target)
    op = "mse_loss_backward"
    shape = _check_mse(op, xp, input, target, reduction, grad_output)
    grad = 2.0 * (input - target) * _elementwise_grad(op, grad_output, reduction, shape, xp)
    return xp.asarray(_unbroadcast(grad, input.shape, xp)), xp.asarray(_unbroadcast(-grad, target.shape, xp))


def _log_sigmoid(x, xp):
    """``log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))``: finite for every finite ``x``."""
    zero = xp.zeros((), dtype=x.dtype, device=_device(x))
    return xp.minimum(x, zero) - xp.log1p(xp.exp(-xp.abs(x)))


def _check_bce(op, xp, input, target, weight, reduction, pos_weight, grad_output=None):
    check_float_arrays(op, xp, input=input, target=target, weight=weight, pos_weight=pos_weight, grad_output=grad_output)
    check_choice(op, "reduction", reduction, _REDUCTIONS)
    check_shape(op, "target", target, input.shape)
    for name, array in (("weight", weight), ("pos_weight", pos_weight)):
        if array is not None:
            _broadcast_shape(op, name, array, input, into=input.shape)


@differentiable("input", "target", "weight")
def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", *, pos_weight=None):
    """Binary cross entropy of logits, as ``torch.nn.functional.binary_cross_entropy_with_logits``.

    ``loss = weight * ((1 - t) x - (1 + (pos_weight - 1) t) log_sigmoid(x))``, with the stable
    ``log_sigmoid(x) = min(x, 0) - log1p(exp(-|x|))`` (finite for logits of ±1e4).

    Shapes
    ------
    input, target : any, the same shape
    weight, pos_weight : None or broadcastable to the input's shape (pos_weight: typically (C,)
        for the last axis); not differentiated (weight's gradient slot is None; pos_weight is
        keyword-only, as it follows ``reduction`` in torch's signature, and has no slot)
    output : () or, with reduction="none", the input's shape
    """
    xp = namespace_of(input, target, weight, pos_weight)
    op = "binary_cross_entropy_with_logits"
    _check_bce(op, xp, input, target, weight, reduction, pos_weight)
    log_sigmoid = _log_sigmoid(input, xp)
    if pos_weight is None:
        losses = (1.0 - target) * input - log_sigmoid
    else:
        losses = (1.0 - target) * input - (1.0 + (pos_weight - 1.0) * target) * log_sigmoid
    if weight is not None:
        losses = losses * weight
    return _reduce_elementwise(losses, reduction, xp)


@binary_cross_entropy_with_logits.defbackward
def binary_cross_entropy_with_logits_backward(grad_output, input, target, weight=None, reduction="mean", *, pos_weight=None):
    """Gradient of :func:`binary_cross_entropy_with_logits`.

    Input: ``((pos_weight t + 1 - t) sigmoid(x) - pos_weight t) * weight * scale``
    (``sigmoid(x) - t`` without pos_weight); target: ``(-x - (pos_weight - 1) log_sigmoid(x))
    * weight * scale``.

    Shapes
    ------
    returns : ((input shape), (target shape), None)
    """
    xp = namespace_of(grad_output, input, target, weight, pos_weight)
    op = "binary_cross_entropy_with_logits_backward"
    _check_bce(op, xp, input, target, weight, reduction, pos_weight, grad_output)
    scale = _elementwise_grad(op, grad_output, reduction, input.shape, xp)
    if weight is not None:
        scale = scale * weight
    log_sigmoid = _log_sigmoid(input, xp)
    sigmoid = xp.exp(log_sigmoid)
    if pos_weight is None:
        grad_input = sigmoid - target
        grad_target = -input
    else:
        positive = pos_weight * target
        grad_input = (positive + 1.0 - target) * sigmoid - positive
        grad_target = -input - (pos_weight - 1.0) * log_sigmoid
    return xp.asarray(grad_input * scale), xp.asarray(grad_target * scale), None
