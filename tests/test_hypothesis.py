"""Random configurations (hypothesis) of the windowed ops against torch, on every backend."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import portaconv
import portaconv.functional as F
from portaconv._shapes import conv_output_size, conv_transpose_output_size, pool_output_size
from portaconv.testing import Case, assert_close, available_backends, make_inputs, run_case, torch_reference

pytest.importorskip("torch")
# JAX compiles every new shape (about 150 s for these random shapes); tests/test_jax.py runs the
# registry's cases on it, eagerly and under jax.jit.
BACKENDS = [backend for backend in available_backends() if backend.name != "jax"]
NUMPY = [b for b in BACKENDS if b.name == "numpy"]
small = st.integers(1, 3)
pair = st.tuples(small, small)


def _routes(case):
    """(backend, options) pairs: every backend by default, and NumPy on the Array API reference
    path and (convolutions) with the stride0 input gradient."""
    routes = [(backend, {}) for backend in BACKENDS] + [(backend, {"reference": True}) for backend in NUMPY]
    if case.op.startswith("conv"):
        routes += [(backend, {"grad_input": "stride0"}) for backend in NUMPY]
    return routes


def _check(case, seed):
    """Forward and every gradient of ``case`` on every backend (and route) equal torch's (float64)."""
    rng = np.random.default_rng(seed)
    inputs = make_inputs(case, rng)
    grad_output = rng.standard_normal(np.shape(getattr(F, case.op)(*inputs, **case.params)))
    ref_out, ref_grads = torch_reference(case, inputs, grad_output)
    for backend, changes in _routes(case):
        with portaconv.options(**changes):
            out, grads = run_case(case, inputs, grad_output, backend, "float64")
        where = f"{case} on {backend} {changes or ''}"
        assert_close(out, ref_out, what=where)
        for grad, ref in zip(grads, ref_grads):
            if ref is not None:
                assert_close(grad, ref, what=f"{where}, gradient")


@given(
    batch=st.integers(1, 2), groups=small, group_in=small, group_out=small, size=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)), stride=pair, dilation=pair,
    padding=st.one_of(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.sampled_from(["same", "valid"])),
    bias=st.booleans(), seed=st.integers(0, 2**16),
)
def test_conv2d_random(batch, groups, group_in, group_out, size, kernel, stride, dilation, padding, bias, seed):
    if padding == "same":
        stride = (1, 1)
    pads = (0, 0) if isinstance(padding, str) else padding
    for axis in range(2):
        if padding != "same":
            assume(conv_output_size(size[axis], kernel[axis], stride=stride[axis], padding=pads[axis], dilation=dilation[axis]) >= 1)
    channels, out_channels = groups * group_in, groups * group_out
    case = Case(
        "conv2d",
        ((batch, channels, *size), (out_channels, group_in, *kernel), (out_channels,) if bias else None),
        {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups},
    )
    _check(case, seed)


@given(
    batch=st.integers(1, 2), groups=small, group_in=small, group_out=small, size=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)), stride=pair, dilation=pair,
    padding=st.tuples(st.integers(0, 3), st.integers(0, 3)), output_padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    bias=st.booleans(), seed=st.integers(0, 2**16),
)
def test_conv_transpose2d_random(batch, groups, group_in, group_out, size, kernel, stride, dilation, padding, output_padding, bias, seed):
    for axis in range(2):
        assume(output_padding[axis] < max(stride[axis], dilation[axis]))
        out = conv_transpose_output_size(
            size[axis], kernel[axis], stride=stride[axis], padding=padding[axis], output_padding=output_padding[axis], dilation=dilation[axis]
        )
        assume(out >= 1)
    channels = groups * group_in
    case = Case(
        "conv_transpose2d",
        ((batch, channels, *size), (channels, group_out, *kernel), (groups * group_out,) if bias else None),
        {"stride": stride, "padding": padding, "output_padding": output_padding, "groups": groups, "dilation": dilation},
    )
    _check(case, seed)


def _pool_params(size, kernel, stride, padding, ceil_mode, dilation=(1, 1)):
    for axis in range(2):
        assume(padding[axis] <= kernel[axis] // 2)
        out = pool_output_size(size[axis], kernel[axis], stride=stride[axis], padding=padding[axis], dilation=dilation[axis], ceil_mode=ceil_mode)
        assume(out >= 1)
        # Windows whose taps all land in the padding: torch's backward writes their gradient out of
        # the plane (test_semantics.test_max_pool_window_of_padding_only covers ours).
        for a in range(out):
            assume(any(0 <= a * stride[axis] - padding[axis] + i * dilation[axis] < size[axis] for i in range(kernel[axis])))


@given(
    size=st.tuples(st.integers(1, 9), st.integers(1, 9)), kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)), stride=pair,
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)), dilation=pair, ceil_mode=st.booleans(),
    values=st.sampled_from(["normal", "ties"]), seed=st.integers(0, 2**16),
)
def test_max_pool2d_random(size, kernel, stride, padding, dilation, ceil_mode, values, seed):
    _pool_params(size, kernel, stride, padding, ceil_mode, dilation)
    params = {"kernel_size": kernel, "stride": stride, "padding": padding, "dilation": dilation, "ceil_mode": ceil_mode}
    _check(Case("max_pool2d", ((2, 2, *size),), params, values), seed)


@given(
    size=st.tuples(st.integers(1, 9), st.integers(1, 9)), kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)), stride=pair,
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)), ceil_mode=st.booleans(), count_include_pad=st.booleans(),
    divisor_override=st.one_of(st.none(), st.integers(1, 7)), seed=st.integers(0, 2**16),
)
def test_avg_pool2d_random(size, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override, seed):
    _pool_params(size, kernel, stride, padding, ceil_mode)
    params = {"kernel_size": kernel, "stride": stride, "padding": padding, "ceil_mode": ceil_mode,
              "count_include_pad": count_include_pad, "divisor_override": divisor_override}
    _check(Case("avg_pool2d", ((2, 2, *size),), params), seed)


@given(channels=st.integers(1, 9), size=st.integers(1, 8), alpha=st.floats(1e-4, 2.0), beta=st.floats(0.1, 1.5),
       k=st.floats(0.5, 3.0), seed=st.integers(0, 2**16))
def test_local_response_norm_random(channels, size, alpha, beta, k, seed):
    _check(Case("local_response_norm", ((2, channels, 3, 2),), {"size": size, "alpha": alpha, "beta": beta, "k": k}), seed)
