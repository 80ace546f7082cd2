"""The backend selector: names, modules, host copies, and its errors."""

import sys

import numpy as np
import pytest

import portaconv
from portaconv import asarray, get_namespace, to_numpy
from portaconv.testing import available_backends


def test_names_and_modules():
    import array_api_compat.numpy as compat_numpy

    assert get_namespace("numpy") is compat_numpy
    assert get_namespace(np) is compat_numpy
    assert get_namespace(compat_numpy) is compat_numpy
    strict = pytest.importorskip("array_api_strict")
    assert get_namespace("array_api_strict") is strict
    assert get_namespace(strict) is strict


def test_torch_namespace(torch):
    import array_api_compat.torch as compat_torch

    assert get_namespace("torch") is compat_torch
    assert get_namespace(torch) is compat_torch


def test_jax_namespace():
    """JAX implements the standard in jax.numpy itself: the name, jax and jax.numpy all give it."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    assert get_namespace("jax") is jnp
    assert get_namespace(jax) is jnp
    assert get_namespace(jnp) is jnp


@pytest.mark.parametrize("bad, error, message", [
    ("mxnet", ValueError, r"backend='mxnet' is not one of \('numpy', 'cupy', 'torch', 'array_api_strict', 'jax'\)"),
    (3, TypeError, "backend must be a name"),
    (pytest, ValueError, "backend module 'pytest' is not one of the supported backends"),
])
def test_unknown_backend(bad, error, message):
    with pytest.raises(error, match=message):
        get_namespace(bad)


def test_missing_backend_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(ImportError, match=r"backend 'cupy' is not installed; install it with: pip install 'portaconv\[cupy\]'"):
        get_namespace("cupy")


def test_cupy_without_gpu_says_what_is_missing(monkeypatch):
    import types

    class Runtime:
        @staticmethod
        def getDeviceCount():
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=Runtime)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(RuntimeError, match="backend 'cupy' is installed but has no usable CUDA device: cudaErrorNoDevice"):
        get_namespace("cupy")


def test_asarray_roundtrip(backend):
    data = [[1.0, 2.0], [3.0, 4.5]]
    a = asarray(data, backend=backend.xp, dtype="float32", device=backend.device)
    assert a.dtype == backend.xp.float32
    np.testing.assert_array_equal(to_numpy(a), np.array(data, dtype=np.float32))
    # an array of another library goes through the host
    b = asarray(np.array(data), backend=backend.xp, device=backend.device)
    np.testing.assert_array_equal(to_numpy(b), np.array(data))


def test_asarray_bad_dtype():
    with pytest.raises(ValueError, match="dtype='float99' is not a dtype of backend 'numpy'"):
        asarray([1.0], backend="numpy", dtype="float99")


def test_backends_variable(monkeypatch):
    monkeypatch.setenv("PORTACONV_BACKENDS", "numpy")
    assert [b.name for b in available_backends()] == ["numpy"]
    monkeypatch.setenv("PORTACONV_BACKENDS", "numpy,nonesuch")
    with pytest.raises(ValueError, match=r"PORTACONV_BACKENDS names \['nonesuch'\]"):
        available_backends()


def test_public_api():
    assert portaconv.functional.conv2d is not None
    assert "numpy" in portaconv.BACKENDS
    assert {"options", "set_options", "get_options", "Options"} <= set(portaconv.__all__)
    assert all(hasattr(portaconv, name) for name in portaconv.__all__)
