"""Fixtures: every usable backend (PORTACONV_BACKENDS picks a subset) × float32/float64."""

import os

import numpy as np
import pytest
from hypothesis import settings

from portaconv.testing import available_backends

settings.register_profile("default", max_examples=60, deadline=None, derandomize=True)
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))

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


@pytest.fixture(params=["stride0", "col2im"])
def grad_input_method(request, monkeypatch):
    """Force one of conv2d's two input-gradient paths (the default picks per shape)."""
    import portaconv.functional.conv as conv

    monkeypatch.setattr(conv, "GRAD_INPUT_METHOD", request.param)
    return request.param


@pytest.fixture(params=["im2col", "winograd"])
def conv_algorithm(request, monkeypatch):
    """Force one convolution algorithm (Winograd applies to 3×3, stride 1, dilation 1, one group;
    other convolutions keep im2col)."""
    import portaconv.functional.conv as conv

    monkeypatch.setattr(conv, "CONV_ALGORITHM", request.param)
    return request.param


@pytest.fixture(params=[1, 2], ids=["serial", "threads"])
def numpy_threads(request, monkeypatch):
    """NumPy convolutions serial, or split across 2 threads even for the tests' tiny batches."""
    import portaconv
    from portaconv import _threads

    if request.param > 1:
        pytest.importorskip("threadpoolctl")
        monkeypatch.setattr(_threads, "_MIN_WORK", 0)
    previous = portaconv.set_num_threads(request.param)
    yield request.param
    portaconv.set_num_threads(previous)
