"""local_response_norm, forward and backward (torch's convention)."""

from __future__ import annotations

from array_api_compat import device as _device

from .._backend import namespace_of
from .._shapes import _is_int
from .._validate import check_float_arrays, check_shape

__all__ = ["local_response_norm", "local_response_norm_backward"]


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
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"{op}: {name} must be a number, got {value!r}")


def _denominator(x, size, alpha, k, xp):
    # Channels c - size//2 .. c + (size-1)//2: for even sizes one more before than after.
    return k + (alpha / size) * _channel_window_sum(x * x, size // 2, (size - 1) // 2, xp)


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
