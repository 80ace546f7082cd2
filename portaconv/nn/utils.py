"""Gradient clipping (``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``).

Gradients are reassigned (``p.grad = new``), never written in place.
"""

from __future__ import annotations

import math

import array_api_compat

from .._backend import namespace_of

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _parameters(parameters):
    if hasattr(parameters, "grad") and hasattr(parameters, "data"):
        return [parameters]
    if hasattr(parameters, "parameters"):
        raise TypeError(f"got a {type(parameters).__name__} (a module); pass model.parameters()")
    return list(parameters)


def _vector_norm(xp, x, norm_type):
    if norm_type == math.inf:
        if array_api_compat.size(x) == 0:
            return xp.asarray(0.0, dtype=x.dtype, device=array_api_compat.device(x))
        return xp.max(xp.abs(x))
    if hasattr(xp, "linalg") and hasattr(xp.linalg, "vector_norm"):
        return xp.linalg.vector_norm(x, ord=norm_type)
    if norm_type == 0:
        return xp.sum(xp.astype(x != 0, x.dtype))
    return xp.sum(xp.abs(x) ** norm_type) ** (1.0 / norm_type)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale the gradients so that their joint norm is at most ``max_norm``.

    The norm is that of the vector of every gradient's norm; each gradient is multiplied by
    ``min(max_norm / (total_norm + 1e-6), 1)`` (as torch: no division by zero, a no-op when the
    norm is small). Nothing reads array values (no host sync) unless ``error_if_nonfinite``.

    Parameters
    ----------
    parameters : parameter or iterable of parameters
        Objects with ``.grad`` (``None`` grads are skipped), all of one array library.
    max_norm : float
        Largest allowed norm.
    norm_type : float or "inf", default 2.0
        Order of the norm (``inf``: largest absolute value).
    error_if_nonfinite : bool, default False
        Raise when the total norm is NaN or infinite. This reads the norm's value: a host
        synchronization on asynchronous devices.
    foreach : bool, optional
        Accepted for torch compatibility; ignored.

    Returns
    -------
    array
        The total norm before clipping, a 0-d array of the gradients' namespace (0 without
        gradients).

    Raises
    ------
    RuntimeError
        With ``error_if_nonfinite=True`` and a NaN or infinite norm.
    """
    params = _parameters(parameters)
    max_norm, norm_type = float(max_norm), float(norm_type)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        if params:
            xp = namespace_of(params[0].data)
            return xp.asarray(0.0, dtype=params[0].data.dtype, device=array_api_compat.device(params[0].data))
        import numpy as np

        return np.asarray(0.0, dtype=np.float32)
    xp = namespace_of(*grads)
    dtype = xp.result_type(*grads) if len(grads) > 1 else grads[0].dtype
    norms = [xp.astype(_vector_norm(xp, g, norm_type), dtype) for g in grads]
    total = xp.asarray(_vector_norm(xp, xp.stack(norms), norm_type))  # xp.asarray: NumPy gives scalars
    if error_if_nonfinite and not bool(xp.all(xp.isfinite(total))):
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is non-finite ({float(total)}), "
            "so it cannot be clipped; pass error_if_nonfinite=False to scale by it anyway"
        )
    coef = max_norm / (total + 1e-6)
    coef = xp.minimum(coef, xp.ones_like(coef))
    for p in params:
        if p.grad is not None:
            p.grad = p.grad * xp.astype(coef, p.grad.dtype)
    return total


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient into ``[-clip_value, clip_value]`` (NaN stays NaN).

    Parameters
    ----------
    parameters : parameter or iterable of parameters
        Objects with ``.grad`` (``None`` grads are skipped).
    clip_value : float
        Bound on the absolute value.
    foreach : bool, optional
        Accepted for torch compatibility; ignored.
    """
    clip_value = float(clip_value)
    for p in _parameters(parameters):
        if p.grad is not None:
            p.grad = namespace_of(p.grad).clip(p.grad, -clip_value, clip_value)
