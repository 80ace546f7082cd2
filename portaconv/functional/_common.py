"""Helpers shared by the functional modules (private: they all take ``xp``)."""

from __future__ import annotations

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


def bytes_per_element(dtype, xp) -> int:
    """Bytes per element of a floating ``dtype`` (memoized: asked on every convolution call)."""
    key = (type(dtype), dtype)  # (the type first: dtypes of two libraries may hash alike, and warn when compared)
    try:
        return _ITEMSIZES[key]
    except KeyError:
        size = _ITEMSIZES[key] = xp.finfo(dtype).bits // 8
        return size


_ITEMSIZES: dict = {}
