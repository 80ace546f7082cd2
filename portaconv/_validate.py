"""Checks of user input shared by the functional ops. Every error names the op and the argument."""

from __future__ import annotations

import array_api_compat
import numpy as np

_NUMPY_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def check_float_arrays(op: str, xp, **arrays):
    """All non-None ``arrays`` share one real floating dtype and one device."""
    present = {name: a for name, a in arrays.items() if a is not None}
    first_name, first = next(iter(present.items()))
    if all(type(a) is np.ndarray for a in present.values()) and first.dtype in _NUMPY_FLOATS and all(
        a.dtype == first.dtype for a in present.values()
    ):
        return  # NumPy arrays of one float dtype: valid, and checked without the generic calls
    # float32 and float64 only: the dtypes every op is checked in against torch. float16 and
    # bfloat16 raise rather than run untested.
    floats = (xp.float32, xp.float64)
    for name, a in present.items():
        if a.dtype not in floats:
            raise TypeError(f"{op}: {name} must have a real floating dtype (float32 or float64), got {a.dtype}")
    for name, a in present.items():
        if a.dtype != first.dtype:
            raise TypeError(
                f"{op}: {name} has dtype {a.dtype} but {first_name} has dtype {first.dtype}; use one floating dtype"
            )
    first_device = array_api_compat.device(first)
    for name, a in present.items():
        if array_api_compat.device(a) != first_device:
            raise ValueError(
                f"{op}: {name} is on device {array_api_compat.device(a)} but {first_name} is on {first_device}"
            )


def check_ndim(op: str, name: str, x, ndims, layout: str):
    if x.ndim not in ndims:
        allowed = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{op}: {name} must be {allowed} {layout}, got shape {tuple(x.shape)}")


def check_shape(op: str, name: str, x, expected):
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{op}: {name} has shape {tuple(x.shape)}, expected {tuple(expected)}")


def check_choice(op: str, name: str, value, choices):
    if value not in choices:
        raise ValueError(f"{op}: {name} must be one of {choices}, got {value!r}")
