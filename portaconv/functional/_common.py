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
