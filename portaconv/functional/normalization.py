"""local_response_norm and batch_norm, forward and backward (torch's conventions).

batch_norm is pure: its running statistics come back from :func:`batch_norm_running_stats`
instead of being updated in place (JAX arrays are immutable).
"""

from __future__ import annotations

import math
import numbers

from array_api_compat import device as _device

from ..autograd.graph import differentiable
from .._backend import namespace_of
from .._shapes import _is_int
from .._validate import check_float_arrays, check_shape

__all__ = [
    "local_response_norm",
    "local_response_norm_backward",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_running_stats",
]


def _channel_window_sum(v, before, after, xp):
    """``out[:, c] = sum(v[:, c - before : c + after + 1])`` with zeros outside the channels."""
    channels = v.shape[1]
    parts = []
    if before:
        parts.append(xp.zeros((v.shape[0], before, *v.shape[2:]), dtype=v.dtype, device=_device(v)))
    parts.append(v)
    if after:
        parts.append(xp.zeros((v.shape[0], after, *v.shape[2:]), dtype=v.dtype, device=_device(v)))
    padded = xp.concat(parts, axis=1) if len(parts) > 1 else v
    total = padded[:, 0:channels, ...]
    for shift in range(1, before + after + 1):
        total = total + padded[:, shift : shift + channels, ...]
    return total


def _check(op, input, size, alpha, beta, k, xp, grad_output=None):
    if input.ndim < 3:
        raise ValueError(f"{op}: input must have at least 3 dims (N, C, ...), got shape {tuple(input.shape)}")
    check_float_arrays(op, xp, input=input, grad_output=grad_output)
    if not _is_int(size) or size < 1:
        raise ValueError(f"{op}: size must be an int >= 1, got {size!r}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"{op}: {name} must be a number, got {value!r}")


def _denominator(x, size, alpha, k, xp):
    # Channels c - size//2 .. c + (size-1)//2: for even sizes one more before than after.
    return k + (alpha / size) * _channel_window_sum(x * x, size // 2, (size - 1) // 2, xp)


@differentiable("input")
def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalization across channels, as ``torch.nn.functional.local_response_norm``.

    ``b_c = a_c / (k + alpha / size * sum_{j = c - size//2}^{c + (size-1)//2} a_j^2) ** beta``,
    channels outside ``[0, C)`` counting as zeros.

    Shapes
    ------
    input : (N, C, *)
    output : (N, C, *)
    """
    xp = namespace_of(input)
    _check("local_response_norm", input, size, alpha, beta, k, xp)
    return input * _denominator(input, size, alpha, k, xp) ** (-beta)


@local_response_norm.defbackward
def local_response_norm_backward(grad_output, input, size, alpha=1e-4, beta=0.75, k=1.0):
    """Gradient of :func:`local_response_norm`.

    With ``D_c = k + alpha/size * sum_{j in W(c)} a_j^2`` and ``W(c) = [c - size//2, c + (size-1)//2]``,
    ``b_c = a_c D_c^{-beta}`` gives

    ``dL/da_j = g_j D_j^{-beta} - (2 alpha beta / size) a_j sum_{c : j in W(c)} g_c a_c D_c^{-beta-1}``,

    where ``j in W(c)`` ⇔ ``c in [j - (size-1)//2, j + size//2]``: the mirrored window.

    Shapes
    ------
    grad_output, input : (N, C, *)
    returns : ((N, C, *),)
    """
    xp = namespace_of(grad_output, input)
    op = "local_response_norm_backward"
    _check(op, input, size, alpha, beta, k, xp, grad_output)
    check_shape(op, "grad_output", grad_output, input.shape)
    denominator = _denominator(input, size, alpha, k, xp)
    scaled = denominator ** (-beta)
    inner = grad_output * input * scaled / denominator
    spread = _channel_window_sum(inner, (size - 1) // 2, size // 2, xp)
    return (grad_output * scaled - (2.0 * alpha * beta / size) * input * spread,)


# ---- batch_norm ---------------------------------------------------------------------------------


def _real(op, name, value):
    """A hyperparameter as a Python float (NumPy scalars accepted: never an array)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    return float(value)


def _check_channels(op, input, **vectors):
    channels = input.shape[1] if input.ndim > 1 else 0  # 0: the empty (0,) input
    for name, v in vectors.items():
        if v is not None and tuple(v.shape) != (channels,):
            raise ValueError(
                f"{op}: {name} must have shape ({channels},), one entry per channel of input {tuple(input.shape)}, "
                f"got {tuple(v.shape)}"
            )


def _empty_vector(input) -> bool:
    """A (0,) input: torch accepts it (with (0,) statistics) and returns it empty."""
    return input.ndim == 1 and input.shape[0] == 0


def _values_per_channel(shape) -> int:
    return math.prod(shape) // shape[1] if shape[1] else 0


def _check_batch_norm(op, xp, input, running_mean, running_var, weight, bias, training, momentum, eps, grad_output=None):
    """Validate batch_norm's arguments (shapes, dtypes and Python values only); return ``eps``."""
    if input.ndim < 2 and not _empty_vector(input):
        raise ValueError(f"{op}: input must have at least 2 dims (N, C, *), got shape {tuple(input.shape)}")
    check_float_arrays(
        op, xp, input=input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias, grad_output=grad_output
    )
    _check_channels(op, input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    if grad_output is not None:
        check_shape(op, "grad_output", grad_output, input.shape)
    if (running_mean is None) != (running_var is None):
        missing = "running_mean" if running_mean is None else "running_var"
        raise ValueError(f"{op}: running_mean and running_var must both be given or both be None, got {missing}=None")
    if not isinstance(training, bool):
        raise TypeError(f"{op}: training must be a bool, got {training!r}")
    if running_mean is None and not training:
        raise ValueError(f"{op}: running_mean and running_var are required when training=False (evaluation normalizes with them), got None")
    if momentum is not None:
        _real(op, "momentum", momentum)
    eps = _real(op, "eps", eps)
    if not eps > 0:
        raise ValueError(f"{op}: eps must be positive, got {eps!r}")
    if training and input.ndim > 1 and _values_per_channel(input.shape) == 1:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got input shape {tuple(input.shape)}")
    return eps


def _per_channel(v, ndim, xp):
    """(C,) → (1, C, 1, ...) broadcasting against an ``ndim``-D (N, C, *) array."""
    return xp.reshape(v, (1, v.shape[0], *([1] * (ndim - 2))))


def _reduced_axes(ndim):
    return (0, *range(2, ndim))


def _statistics(x, running_mean, running_var, training, eps, xp):
    """``(x - mean, mean, 1 / sqrt(var + eps))`` with the batch's statistics (biased variance)
    when training, the running ones otherwise; mean and the inverse deviation broadcast against
    ``x`` (per channel)."""
    if training:
        axes = _reduced_axes(x.ndim)
        mean = xp.mean(x, axis=axes, keepdims=True)
        centered = x - mean
        var = xp.mean(centered * centered, axis=axes, keepdims=True)
    else:
        mean = _per_channel(running_mean, x.ndim, xp)
        centered = x - mean
        var = _per_channel(running_var, x.ndim, xp)
    return centered, mean, 1.0 / xp.sqrt(var + eps)


@differentiable("input", "running_mean", "running_var", "weight", "bias")
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalization, as ``torch.nn.functional.batch_norm``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel: with ``training`` the
    statistics are the batch's (over N and the spatial axes; biased variance), otherwise the
    running ones.

    Unlike torch, this function never updates ``running_mean`` / ``running_var`` in place (JAX
    arrays are immutable, and a functional op stays pure): in training, compute the updated
    statistics with :func:`batch_norm_running_stats` (``nn.BatchNorm2d`` does). ``momentum`` is
    only validated here, for torch's signature.

    Parameters
    ----------
    input : array
    running_mean, running_var : array or None
        Required when ``training`` is False (torch's rule); both given or both None.
    weight, bias : array, optional
        Per-channel scale and shift.
    training : bool
    momentum : float or None
        Used by :func:`batch_norm_running_stats`, not here.
    eps : float
        Added to the variance; positive.

    Shapes
    ------
    input : (N, C), (N, C, L), (N, C, H, W) or any (N, C, *)
    running_mean, running_var, weight, bias : (C,)
    output : same as input
    """
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)[0]


def _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps):
    """(:func:`batch_norm`'s output, (mean, inverse deviation) per channel, or None for an empty input)."""
    xp = namespace_of(input, running_mean, running_var, weight, bias)
    op = "batch_norm"
    eps = _check_batch_norm(op, xp, input, running_mean, running_var, weight, bias, training, momentum, eps)
    if _empty_vector(input):
        return xp.zeros_like(input), None
    centered, mean, inv_std = _statistics(input, running_mean, running_var, training, eps, xp)
    out = centered * inv_std
    if weight is not None:
        out = out * _per_channel(weight, input.ndim, xp)
    if bias is not None:
        out = out + _per_channel(bias, input.ndim, xp)
    return out, (mean, inv_std)


@batch_norm.defbackward
def batch_norm_backward(grad_output, input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Gradient of :func:`batch_norm`.

    Per channel, over its ``M`` values (N times the spatial size), with ``x̂ = (x - mean) r``,
    ``r = 1 / sqrt(var + eps)`` and ``ĝ = g · weight`` (``g`` without weight):

    - ``dL/dbias = sum(g)``, ``dL/dweight = sum(g x̂)``.
    - Evaluation (running statistics, constants): ``dL/dx = ĝ r``.
    - Training (batch statistics, functions of x): ``d mean/dx_k = 1/M`` and
      ``d var/dx_k = 2 (x_k - mean)/M`` give
      ``dL/dx = r (ĝ - sum(ĝ)/M - x̂ sum(ĝ x̂)/M)``.

    The running statistics get no gradient (None), as in torch (buffers, not parameters).

    Shapes
    ------
    grad_output, input : (N, C, *)
    returns : ((N, C, *), None, None, (C,) or None, (C,) or None)
    """
    return _batch_norm_backward(grad_output, input, running_mean, running_var, weight, bias, training, momentum, eps)


def _batch_norm_backward(grad_output, input, running_mean, running_var, weight, bias, training, momentum, eps, statistics=None):
    """:func:`batch_norm_backward`; ``statistics``: the forward's (mean, inverse deviation), which
    then are not computed again (the same values: ``x - mean`` is recomputed from them)."""
    xp = namespace_of(grad_output, input, running_mean, running_var, weight, bias)
    op = "batch_norm_backward"
    eps = _check_batch_norm(op, xp, input, running_mean, running_var, weight, bias, training, momentum, eps, grad_output)
    if _empty_vector(input):
        zeros = [None if v is None else xp.zeros_like(v) for v in (weight, bias)]
        return xp.zeros_like(input), None, None, *zeros
    ndim, axes = input.ndim, _reduced_axes(input.ndim)
    if statistics is None:
        centered, _, inv_std = _statistics(input, running_mean, running_var, training, eps, xp)
    else:
        mean, inv_std = statistics
        centered = input - mean
    normalized = centered * inv_std
    scaled = grad_output if weight is None else grad_output * _per_channel(weight, ndim, xp)
    if training:
        count = _values_per_channel(input.shape)
        mean_grad = xp.sum(scaled, axis=axes, keepdims=True) / count
        mean_grad_normalized = xp.sum(scaled * normalized, axis=axes, keepdims=True) / count
        grad_input = inv_std * (scaled - mean_grad - normalized * mean_grad_normalized)
    else:
        grad_input = scaled * inv_std
    grad_weight = None if weight is None else xp.sum(grad_output * normalized, axis=axes)
    grad_bias = None if bias is None else xp.sum(grad_output, axis=axes)
    return grad_input, None, None, grad_weight, grad_bias


def _batch_norm_vjp_forward(needs, input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    # Keeps the per-channel mean and inverse deviation for the backward (torch's save_mean and
    # save_invstd), which otherwise computes them again: three passes over the input.
    out, statistics = _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    return out, ((input, running_mean, running_var, weight, bias, training, momentum, eps), statistics)


def _batch_norm_vjp_backward(residuals, grad_output, needs):
    arguments, statistics = residuals
    return _batch_norm_backward(grad_output, *arguments, statistics=statistics)


batch_norm.defvjp(_batch_norm_vjp_forward, _batch_norm_vjp_backward)


def batch_norm_running_stats(input, running_mean, running_var, momentum=0.1, num_batches_tracked=0):
    """The running statistics after one training step of :func:`batch_norm` on ``input``, as
    torch updates them in place: ``new = (1 - f) · running + f · batch``.

    The batch mean is over N and the spatial axes; the batch variance is the UNBIASED one
    (divided by ``M - 1``, ``M`` values per channel), as torch's. ``f`` is ``momentum``, or with
    ``momentum=None`` the cumulative average's ``1 / (num_batches_tracked + 1)``, where
    ``num_batches_tracked`` counts the batches BEFORE this one (torch increments its counter
    first, then uses ``1 / num_batches_tracked``). The caller increments its count.

    Parameters
    ----------
    input, running_mean, running_var : array
    momentum : float or None
    num_batches_tracked : int or 0-D integer array
        Only read when ``momentum`` is None; an array stays an array (no host read under jit).

    Returns
    -------
    (new_running_mean, new_running_var) : arrays

    Shapes
    ------
    input : (N, C, *)
    running_mean, running_var : (C,) → ((C,), (C,))
    """
    xp = namespace_of(input, running_mean, running_var)
    op = "batch_norm_running_stats"
    if input.ndim < 2:
        raise ValueError(f"{op}: input must have at least 2 dims (N, C, *), got shape {tuple(input.shape)}")
    if running_mean is None or running_var is None:
        raise ValueError(f"{op}: running_mean and running_var are required, got None")
    check_float_arrays(op, xp, input=input, running_mean=running_mean, running_var=running_var)
    _check_channels(op, input, running_mean=running_mean, running_var=running_var)
    count = _values_per_channel(input.shape)
    if count < 2:
        raise ValueError(
            f"{op}: expected more than 1 value per channel (the unbiased variance divides by M - 1), "
            f"got input shape {tuple(input.shape)}"
        )
    if momentum is not None:
        factor = _real(op, "momentum", momentum)
    elif _is_int(num_batches_tracked):
        if num_batches_tracked < 0:
            raise ValueError(f"{op}: num_batches_tracked must be >= 0, got {num_batches_tracked!r}")
        factor = 1.0 / (int(num_batches_tracked) + 1)
    elif hasattr(num_batches_tracked, "dtype") and hasattr(num_batches_tracked, "ndim"):
        if num_batches_tracked.ndim != 0 or not xp.isdtype(num_batches_tracked.dtype, "integral"):
            raise TypeError(
                f"{op}: num_batches_tracked must be an int or a 0-D integer array, got an array of shape "
                f"{tuple(num_batches_tracked.shape)} and dtype {num_batches_tracked.dtype}"
            )
        factor = 1.0 / (xp.astype(num_batches_tracked, input.dtype) + 1.0)
    else:
        raise TypeError(f"{op}: num_batches_tracked must be an int or a 0-D integer array, got {num_batches_tracked!r}")
    axes = _reduced_axes(input.ndim)
    mean = xp.mean(input, axis=axes, keepdims=True)
    centered = input - mean
    unbiased = xp.sum(centered * centered, axis=axes) / (count - 1)
    new_mean = (1.0 - factor) * running_mean + factor * xp.reshape(mean, (input.shape[1],))
    new_var = (1.0 - factor) * running_var + factor * unbiased
    return new_mean, new_var
