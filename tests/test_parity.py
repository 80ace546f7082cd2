"""The parity matrix: every op case × every backend × float32/float64 against torch in float64."""

import functools

import numpy as np
import pytest

import portaconv
import portaconv.functional as F
from portaconv import to_numpy
from portaconv.primitives import dispatch, reference
from portaconv.testing import CASES, assert_close, available_backends, make_inputs, run_case, torch_reference

pytest.importorskip("torch")



@functools.lru_cache(maxsize=None)
def _reference(index):
    """Inputs, gradient and torch's float64 results for one case (computed once)."""
    case = CASES[index]
    rng = np.random.default_rng(index)
    inputs = make_inputs(case, rng)
    shape = np.shape(to_numpy(getattr(F, case.op)(*inputs, **case.params)))
    grad_output = rng.standard_normal(shape)
    ref_out, ref_grads = torch_reference(case, inputs, grad_output)
    return inputs, grad_output, ref_out, ref_grads


@pytest.mark.parametrize("index", range(len(CASES)), ids=[str(c) for c in CASES])
def test_matches_torch(index, backend, dtype):
    case = CASES[index]
    inputs, grad_output, ref_out, ref_grads = _reference(index)
    out, grads = run_case(case, inputs, grad_output, backend, dtype)
    expected_type = type(backend.xp.asarray(0.0, device=backend.device))
    assert type(out) is expected_type, "output keeps the input's namespace"
    assert out.dtype == getattr(backend.xp, dtype)
    assert len(grads) == len(inputs), "one gradient per positional input"
    assert_close(out, ref_out, dtype=dtype, what=f"{case} forward")
    for position, (grad, ref) in enumerate(zip(grads, ref_grads)):
        if ref is None:
            assert grad is None, f"{case}: gradient {position} should be None"
            continue
        assert type(grad) is expected_type and grad.dtype == getattr(backend.xp, dtype)
        if backend.device is not None:
            assert str(grad.device).startswith(str(backend.device))
        assert_close(grad, ref, dtype=dtype, what=f"{case} grad {position}")


CONV_INDICES = [i for i, c in enumerate(CASES) if c.op in ("conv2d", "conv_transpose2d")]


def _run_against_torch(index, backend, dtype, what, *, jit=False):
    """Run case ``index`` on ``backend`` (``jit``: under ``jax.jit``), assert its forward and
    gradients close to torch's (``what`` names the path in failures); return them as NumPy arrays
    (None for no gradient)."""
    inputs, grad_output, ref_out, ref_grads = _reference(index)
    out, grads = run_case(CASES[index], inputs, grad_output, backend, dtype, jit=jit)
    assert_close(out, ref_out, dtype=dtype, what=f"{what} forward")
    for position, (grad, ref) in enumerate(zip(grads, ref_grads)):
        if ref is not None:
            assert_close(grad, ref, dtype=dtype, what=f"{what} grad {position}")
    return [to_numpy(out)] + [None if g is None else to_numpy(g) for g in grads]


def _winograd_applies(case):
    weight = case.inputs[1]
    params = case.params
    return (
        case.op == "conv2d"
        and tuple(weight[2:]) == (3, 3)
        and params.get("stride", 1) in (1, (1, 1))
        and params.get("dilation", 1) in (1, (1, 1))
        and params.get("groups", 1) == 1
    )


@pytest.mark.parametrize("index", CONV_INDICES, ids=[str(CASES[i]) for i in CONV_INDICES])
def test_every_conv_path_matches_torch(index, backend, dtype, grad_input_method, conv_algorithm, kernels):
    """Both input-gradient formulations (col2im, stride0) × both algorithms (im2col, Winograd
    where it applies) × the backend's kernels or the reference give torch's forward and gradients
    (all but the default combination, which test_matches_torch runs). On JAX under ``jax.jit``:
    the stricter mode (a host sync fails to trace), and a third of the eager run's time, whose
    per-operation compilations dominate; test_matches_torch runs the default path eagerly."""
    if (grad_input_method, conv_algorithm, kernels) == ("col2im", "im2col", "auto"):
        pytest.skip("the default path: test_matches_torch runs it")
    if conv_algorithm == "winograd" and not _winograd_applies(CASES[index]):
        pytest.skip("Winograd does not apply: the same im2col path as the other parameter")
    if kernels == "reference" and dispatch.family(backend.xp) is None:
        pytest.skip(f"{backend} has no kernels: the same reference path as the other parameter")
    path = f"{CASES[index]} ({grad_input_method}, {conv_algorithm}, kernels {kernels})"
    _run_against_torch(index, backend, dtype, path, jit=backend.name == "jax")


WINDOW_OPS = ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d")
WINDOW_INDICES = [i for i, c in enumerate(CASES) if c.op in WINDOW_OPS]
# Every backend family with kernels that is usable here (CuPy wherever a GPU is present, even when
# PORTACONV_BACKENDS leaves it out).
KERNEL_BACKENDS = [b for b in available_backends("") if dispatch.family(b.xp) is not None and b.device is None]
# The windowed primitives each family has a kernel for (CuPy: im2col and col2im only; its pooling
# and to_nchw run the reference).
KERNELS_BY_FAMILY = {
    "numpy": ("im2col", "col2im", "max_pool", "max_pool_backward", "window_sum", "window_spread", "to_nchw", "conv_im2col",
              "conv_im2col_backward", "channel_sum"),
    "cupy": ("im2col", "col2im"),
}
# Kernels that add in another order than the reference: their results are compared to the dtype's
# rounding (the NumPy family's fused convolution sums blocks of output rows; tests/test_numba_kernels.py
# checks its indexing bit for bit on sums that are exact in any order).
REORDERED = {"numpy": ("conv2d", "conv_transpose2d")}


@pytest.mark.parametrize("backend_name", [b.name for b in KERNEL_BACKENDS])
@pytest.mark.parametrize("index", WINDOW_INDICES, ids=[str(CASES[i]) for i in WINDOW_INDICES])
def test_kernels_match_reference_bit_for_bit(index, backend_name, dtype, grad_input_method):
    """The registered kernels (numba on NumPy, CUDA on CuPy) and the Array API reference give the
    same bits on every windowed case, forward and backward (the kernels in REORDERED: equal to the
    dtype's rounding), and torch's results; the kernels are the ones dispatched by default."""
    (backend,) = [b for b in KERNEL_BACKENDS if b.name == backend_name]
    xp_dtype = getattr(backend.xp, dtype)
    for primitive in KERNELS_BY_FAMILY[dispatch.family(backend.xp)]:
        assert dispatch.implementation(primitive, backend.xp, xp_dtype) is not getattr(reference, primitive), primitive
    results = {}
    for kernels in ("reference", "auto"):
        with portaconv.options(kernels=kernels, algorithm="im2col"):
            results[kernels] = _run_against_torch(index, backend, dtype, f"{CASES[index]} (kernels {kernels})")
    reordered = CASES[index].op in REORDERED.get(dispatch.family(backend.xp), ())
    for ref, kernel in zip(results["reference"], results["auto"]):
        if reordered and ref is not None:
            assert_close(kernel, ref, dtype=dtype, what=f"{CASES[index]}: kernels against the reference")
        else:
            assert (ref is None and kernel is None) or np.array_equal(ref, kernel, equal_nan=True)
