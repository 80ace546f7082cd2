"""Fixtures: every usable backend (PORTACONV_BACKENDS picks a subset) × float32/float64."""

import os

import numpy as np
import pytest
from hypothesis import settings

import portaconv
from portaconv.testing import available_backends

settings.register_profile("default", max_examples=60, deadline=None, derandomize=True)
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))

# XLA compiles every op JAX runs eagerly, and every jitted test function, once per shape and dtype:
# thousands of small one-off compilations, most of the suite's JAX time. Without the CPU backend's
# MLIR fusion emitters and without LLVM's optimization passes they compile much faster; the
# arithmetic keeps IEEE semantics either way (XLA's fast math is off by default), so the parity
# checks test the same library code. test_jax.py::test_xla_default_flags runs a sample with XLA's
# defaults, as users get them. (Set before JAX starts its backend; an XLA_FLAGS of your own wins.)
XLA_TEST_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ.setdefault("XLA_FLAGS", XLA_TEST_FLAGS)

try:  # float64 on JAX (its default is float32 only)
    import jax

    jax.config.update("jax_enable_x64", True)
except ImportError:
    pass

BACKENDS = available_backends()


@pytest.fixture(params=BACKENDS, ids=str)
def backend(request):
    return request.param


@pytest.fixture
def xp(backend):
    return backend.xp


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def rng(request):
    # A seed per test id: reproducible, and different cases get different numbers.
    return np.random.default_rng(_seed(request.node.nodeid))


def _seed(text):
    import zlib

    return zlib.crc32(text.encode())


@pytest.fixture(scope="session")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(params=["col2im", "stride0"])
def grad_input_method(request):
    """Run with one of conv2d's two input-gradient formulations (portaconv.options(grad_input=))."""
    with portaconv.options(grad_input=request.param):
        yield request.param


@pytest.fixture(params=["im2col", "winograd"])
def conv_algorithm(request):
    """Force one convolution algorithm (Winograd applies to 3×3, stride 1, dilation 1, one group;
    other convolutions keep im2col)."""
    with portaconv.options(algorithm=request.param):
        yield request.param


@pytest.fixture(params=["auto", "reference"])
def kernels(request):
    """The backend's registered kernels (numba on NumPy, CUDA on CuPy) or the Array API reference."""
    with portaconv.options(kernels=request.param):
        yield request.param
