"""Checks of user input shared by the functional ops. Every error names the op and the argument."""

from __future__ import annotations

import array_api_compat
import numpy as np

_NUMPY_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def is_eager(x) -> bool:
    """Whether ``x``'s values may be read on the host (``bool(...)``, ``int(...)``) for a check.

    False for lazy arrays (Dask, ...) and for JAX tracers (under ``jax.jit``, ``jax.grad``,
    ``jax.vmap``), where reading a value is a host synchronization the trace cannot make. A
    concrete JAX array is eager here (``array_api_compat.is_lazy_array`` calls every JAX array
    lazy): outside a trace its values are checked as NumPy's and torch's are.
    """
    if array_api_compat.is_jax_array(x):
        import jax  # already imported: x is one of its arrays

        return not isinstance(x, jax.core.Tracer)
    return not array_api_compat.is_lazy_array(x)


def check_float_arrays(op: str, xp, **arrays):
    """All non-None ``arrays`` share one real floating dtype and one device.

    Dtypes and devices only, never values: safe under ``jax.jit``. A JAX tracer has no device
    (``array_api_compat.device`` gives None); it is not compared, so a jitted function may mix its
    traced arguments with concrete arrays it closes over.
    """
    dtype = None
    for a in arrays.values():  # NumPy arrays of one float dtype: valid, checked without the generic calls
        if a is None:
            continue
        if type(a) is not np.ndarray or (a.dtype != dtype if dtype is not None else a.dtype not in _NUMPY_FLOATS):
            break
        dtype = a.dtype
    else:
        return
    present = {name: a for name, a in arrays.items() if a is not None}
    first_name, first = next(iter(present.items()))
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
    devices = {name: array_api_compat.device(a) for name, a in present.items()}
    known = {name: d for name, d in devices.items() if d is not None}  # None: a JAX tracer
    if known:
        reference_name, reference_device = next(iter(known.items()))
        for name, d in known.items():
            if d != reference_device:
                raise ValueError(f"{op}: {name} is on device {d} but {reference_name} is on {reference_device}")


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


def _kind(value):
    """The types in a parameter, for a cache key that tells 1, 1.0 and True apart (they hash and
    compare alike but validate differently)."""
    if type(value) is tuple:
        return (tuple, *map(type, value))
    return type(value)


def cached_geometry(*, shapes: int):
    """Memoize a geometry validator ``validate(op, *shapes, *params)``: a repeated call (every
    training step) skips the Python checks. The first ``shapes`` arguments after ``op`` are shapes;
    keys hold the parameters' types; errors are not cached; unhashable arguments skip the cache."""

    def decorate(validate):
        cache = {}

        def wrapper(op, *args):
            try:  # (a list or another unhashable argument: validated every time)
                key = (op, args, *map(_kind, args[shapes:]))
                return cache[key]
            except KeyError:
                pass
            except TypeError:
                return validate(op, *args)
            if len(cache) > 4096:
                cache.clear()
            cache[key] = result = validate(op, *args)
            return result

        wrapper.__wrapped__ = validate
        wrapper.__doc__ = validate.__doc__
        return wrapper

    return decorate
