"""Helpers shared by the functional modules (private: they all take ``xp``)."""

from __future__ import annotations

from array_api_compat import device

from .._backend import is_numpy

from .._validate import check_float_arrays, check_ndim


def batched(op, input, xp, grad_output=None, *, layout="(N, C, H, W) or unbatched (C, H, W)", **others):
    """Check a spatial op's input, gradient and ``others`` (same float dtype and device); add a
    batch axis to unbatched (C, H, W) input and gradient."""
    check_ndim(op, "input", input, (3, 4), layout)
    check_float_arrays(op, xp, input=input, **others, grad_output=grad_output)
    unbatched = input.ndim == 3
    if unbatched:
        input = xp.expand_dims(input, axis=0)
        if grad_output is not None:
            check_ndim(op, "grad_output", grad_output, (3,), "(C, H, W) like the unbatched input")
            grad_output = xp.expand_dims(grad_output, axis=0)
    return input, grad_output, unbatched


def unbatch(x, unbatched):
    return x[0, ...] if unbatched else x


def all_finite(values, xp) -> bool:
    """Whether every element is finite, from the sum: one reduction instead of an ``isfinite``
    pass and an ``all`` pass. Conservative: a sum of finite values that overflows says False,
    which only sends the caller down its exact (slower) path."""
    return bool(xp.isfinite(xp.sum(values)))


def masked(values, mask, xp, *, finite=None):
    """``where(mask, values, 0)``.

    Multiplying by the mask gives the same numbers for finite values and runs without the
    data-dependent branches that make NumPy's ``where`` ~10x slower on random masks; non-finite
    values (where ``inf * 0`` would give NaN) take the ``where`` path. ``finite`` passes a check
    already made on ``values``.
    """
    if finite is None:
        finite = all_finite(values, xp)
    if finite:
        if is_numpy(xp):
            return values * mask  # NumPy casts the mask inside the multiplication: one pass less
        return values * xp.astype(mask, values.dtype)
    return xp.where(mask, values, xp.zeros((), dtype=values.dtype, device=device(values)))
