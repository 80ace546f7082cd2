"""Backend selection: names to array-api-compat namespaces, namespace inference, host copies."""

from __future__ import annotations

import importlib
import types

import array_api_compat
import array_api_compat.numpy as _compat_numpy
import numpy as _np

__all__ = ["BACKENDS", "get_namespace", "asarray", "to_numpy", "backend_name", "namespace_of"]

#: Backend names accepted by :func:`get_namespace`.
BACKENDS = ("numpy", "cupy", "torch", "array_api_strict", "jax")

_INSTALL = {
    "numpy": "pip install numpy",
    "cupy": "pip install 'portaconv[cupy]' (CuPy for CUDA 12: cupy-cuda12x; CUDA 13: cupy-cuda13x)",
    "torch": "pip install torch (CPU only: pip install torch --index-url https://download.pytorch.org/whl/cpu)",
    "array_api_strict": "pip install array-api-strict",
    "jax": "pip install 'jax[cpu]' (or jax[cuda12] for NVIDIA GPUs)",
}


def _cupy_check(module):
    # A CuPy import succeeds on machines without a GPU; the failure only comes at the first kernel.
    try:
        count = module.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDARuntimeError, missing driver library, ...
        raise RuntimeError(
            f"backend 'cupy' is installed but has no usable CUDA device: {error}. "
            "It needs an NVIDIA GPU, its driver, and the CuPy wheel matching the CUDA version "
            "(cupy-cuda12x or cupy-cuda13x)."
        ) from error
    if count < 1:
        raise RuntimeError("backend 'cupy' is installed but no CUDA device is visible (device count 0)")


def get_namespace(backend):
    """Return the Array API namespace for a backend.

    Parameters
    ----------
    backend : {"numpy", "cupy", "torch", "array_api_strict", "jax"} or module
        A backend name, or a module object: ``numpy``, ``cupy``, ``torch``, ``array_api_strict``
        or an ``array_api_compat`` wrapper of one of them.

    Returns
    -------
    module
        The array-api-compat namespace (``array_api_strict`` itself, which is already compliant).

    Raises
    ------
    ValueError
        For an unknown backend name.
    ImportError
        When the backend's library is not installed; the message says how to install it.
    RuntimeError
        For ``"cupy"`` without a visible CUDA device.
    """
    if isinstance(backend, types.ModuleType):
        name = backend.__name__
        if name.startswith("array_api_compat."):
            name = name.split(".", 1)[1]
        name = name.split(".")[0]
        if name == "jaxlib":
            name = "jax"
        if name not in BACKENDS:
            raise ValueError(f"backend module {backend.__name__!r} is not one of the supported backends {BACKENDS}")
        backend = name
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a name {BACKENDS} or a module, got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    try:
        module = importlib.import_module(backend)
    except ImportError as error:
        raise ImportError(f"backend {backend!r} is not installed; install it with: {_INSTALL[backend]}") from error
    if backend == "cupy":
        _cupy_check(module)
    if backend == "array_api_strict":
        return module
    if backend == "jax":
        return importlib.import_module("jax.numpy")  # JAX implements the standard in jax.numpy itself
    return importlib.import_module(f"array_api_compat.{backend}")


def backend_name(x) -> str:
    """Name of the library an array belongs to (``"numpy"``, ``"torch"``, ``"jax"``, ...).

    A JAX array is ``"jax"`` both when concrete (its class lives in ``jaxlib``) and when traced
    under ``jax.jit`` / ``jax.grad`` (a ``jax`` tracer), so that a jitted function may mix its
    traced arguments with the concrete arrays it closes over.
    """
    name = type(x).__module__.split(".")[0]
    return "jax" if name == "jaxlib" else name


def _library(xp) -> str:
    """The :func:`backend_name` of a namespace's arrays: ``"jax"`` for ``jax.numpy``, ``"numpy"``
    for ``array_api_compat.numpy``, ``"array_api_strict"`` for itself."""
    name = xp.__name__
    if name.startswith("array_api_compat."):
        name = name.split(".", 1)[1]
    return name.split(".")[0]


def namespace_of(*arrays):
    """Infer the one namespace shared by ``arrays`` (``None`` entries are skipped).

    Raises
    ------
    TypeError
        When an argument is not an array, or arrays come from two libraries.
    """
    numpy = False
    for a in arrays:  # the common case, NumPy arrays (and Nones), without the generic inference
        if type(a) is _np.ndarray:
            numpy = True
        elif a is not None:
            break
    else:
        if numpy:
            return _compat_numpy
    present = [a for a in arrays if a is not None]
    libraries = {}
    for a in present:
        if not array_api_compat.is_array_api_obj(a) or isinstance(a, (int, float, bool, complex)):
            raise TypeError(f"expected an array, got {type(a).__name__}")
        libraries.setdefault(backend_name(a), a)
    if len(libraries) > 1:
        raise TypeError(
            f"arrays from different libraries: {' and '.join(sorted(libraries))}; "
            "move them to one backend first (portaconv.asarray(..., backend=...))"
        )
    return array_api_compat.array_namespace(*present)


def asarray(data, *, backend="numpy", dtype=None, device=None):
    """Create an array on a backend.

    Parameters
    ----------
    data : array_like
        Nested sequences, a scalar, or an array of any backend (copied through the host when its
        library differs from ``backend``; an array of the backend's own library, a JAX tracer
        under ``jax.jit`` included, goes to its ``asarray`` directly).
    backend : str or module, keyword-only
        See :func:`get_namespace`.
    dtype : str or dtype, optional
        ``"float32"``, ``"float64"``, ... or a dtype of the backend.
    device : optional
        A device of the backend (for example ``"cuda:0"`` for torch).

    Raises
    ------
    ValueError
        For a dtype name the backend lacks, or when the backend makes another dtype than asked
        (JAX without ``jax_enable_x64`` turns float64 into float32).
    """
    xp = get_namespace(backend)
    if isinstance(dtype, str):
        if not hasattr(xp, dtype):
            raise ValueError(f"dtype={dtype!r} is not a dtype of backend {backend!r}")
        dtype = getattr(xp, dtype)
    if array_api_compat.is_array_api_obj(data) and not isinstance(data, (int, float, bool, complex)):
        if backend_name(data) != _library(xp):
            data = to_numpy(data)  # another library's array: through the host (never a traced one)
    out = xp.asarray(data, dtype=dtype, device=device)
    if dtype is not None and out.dtype != dtype:
        # JAX without jax_enable_x64 turns float64 into float32 silently.
        raise ValueError(
            f"backend {backend!r} made {out.dtype} where {dtype} was asked for"
            + ("; enable 64-bit floats with jax.config.update('jax_enable_x64', True)" if "jax" in xp.__name__ else "")
        )
    return out


def to_numpy(x):
    """Copy an array of any backend (or a :class:`portaconv.Tensor`'s) to a NumPy array on the host."""
    import numpy as np

    from .autograd.tensor import Tensor

    if isinstance(x, Tensor):
        x = x.data

    if array_api_compat.is_numpy_array(x):
        return np.asarray(x)
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    try:
        return np.from_dlpack(x)
    except Exception:
        return np.asarray(x)
