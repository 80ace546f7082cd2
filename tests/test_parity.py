"""The parity matrix: every op case × every backend × float32/float64 against torch in float64."""

import functools

import numpy as np
import pytest

import portaconv.functional as F
from portaconv import to_numpy
from portaconv.testing import CASES, assert_close, available_backends, make_inputs, run_case, torch_reference

pytest.importorskip("torch")

# NumPy-only paths run on NumPy whatever PORTACONV_BACKENDS selects (a GPU run may leave it out).
(NUMPY,) = available_backends("numpy")


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


def _run_against_torch(index, backend, dtype, what):
    """Run case ``index`` on ``backend``, assert its forward and gradients close to torch's
    (``what`` names the path in failures); return them as NumPy arrays (None for no gradient)."""
    inputs, grad_output, ref_out, ref_grads = _reference(index)
    out, grads = run_case(CASES[index], inputs, grad_output, backend, dtype)
    assert_close(out, ref_out, dtype=dtype, what=f"{what} forward")
    for position, (grad, ref) in enumerate(zip(grads, ref_grads)):
        if ref is not None:
            assert_close(grad, ref, dtype=dtype, what=f"{what} grad {position}")
    return [to_numpy(out)] + [None if g is None else to_numpy(g) for g in grads]


@pytest.mark.parametrize("index", CONV_INDICES, ids=[str(CASES[i]) for i in CONV_INDICES])
def test_every_conv_path_matches_torch(index, backend, dtype, grad_input_method, conv_algorithm, numpy_threads):
    """Both input-gradient paths (stride0/rot180, the reference, and col2im) × both algorithms
    (im2col, the reference, and Winograd where it applies) × serial or batch-parallel NumPy give
    torch's forward and gradients."""
    _run_against_torch(index, backend, dtype, f"{CASES[index]} ({grad_input_method}, {conv_algorithm}, {numpy_threads} threads)")


POOL_INDICES = [i for i, c in enumerate(CASES) if c.op == "max_pool2d"]


@pytest.mark.parametrize("index", POOL_INDICES, ids=[str(CASES[i]) for i in POOL_INDICES])
def test_max_pool_threaded_matches_torch(index, dtype, monkeypatch):
    """max_pool2d's backward with the batch split across 2 threads (NumPy) gives torch's results
    (the path is NumPy-only; the generic one runs under every backend in test_matches_torch)."""
    pytest.importorskip("threadpoolctl")
    import portaconv
    from portaconv.functional import pooling

    monkeypatch.setattr(pooling, "_SPLIT_ELEMENTS", 0)
    calls = []
    split = pooling._threads.map_ranges
    monkeypatch.setattr(pooling._threads, "map_ranges", lambda f, ranges: calls.append(ranges) or split(f, ranges))
    previous = portaconv.set_num_threads(2)
    try:
        case = CASES[index]
        inputs, grad_output, ref_out, ref_grads = _reference(index)
        out, grads = run_case(case, inputs, grad_output, NUMPY, dtype)
        assert_close(out, ref_out, dtype=dtype, what=f"{case} forward (threads)")
        assert_close(grads[0], ref_grads[0], dtype=dtype, what=f"{case} grad_input (threads)")
        batch = case.inputs[0][0] if len(case.inputs[0]) == 4 else 1
        assert bool(calls) == (batch > 1), "split exactly when there is a batch to split"
    finally:
        portaconv.set_num_threads(previous)


@pytest.mark.parametrize("index", CONV_INDICES, ids=[str(CASES[i]) for i in CONV_INDICES])
def test_per_image_products_match_single_product(index, dtype, monkeypatch):
    """NumPy's forward and weight gradient as one product per image (few weight columns) and as
    one product over the whole batch (the reference) both give torch's results; so do the bias
    gradient's sum and its product with ones."""
    from portaconv.functional import conv

    for path, limit in (("single product, sum", 0), ("per image, product", 10**9)):
        monkeypatch.setattr(conv, "_PER_IMAGE_MAX_COLUMNS", limit)
        monkeypatch.setattr(conv, "_BIAS_PRODUCT_MIN_ELEMENTS", 10**9 - limit)
        _run_against_torch(index, NUMPY, dtype, f"{CASES[index]} ({path})")


@pytest.mark.parametrize("index", CONV_INDICES, ids=[str(CASES[i]) for i in CONV_INDICES])
def test_frame_col2im_matches_sliced(index, dtype, monkeypatch):
    """NumPy's col2im input gradient with the scatter-add over the padded frame (stride 1) and
    with kh·kw window slices (the reference) both give torch's results."""
    from portaconv import window
    from portaconv.functional import conv

    case = CASES[index]
    inputs, grad_output, ref_out, ref_grads = _reference(index)
    monkeypatch.setattr(conv, "GRAD_INPUT_METHOD", "col2im")
    monkeypatch.setattr(conv, "CONV_ALGORITHM", "im2col")
    monkeypatch.setattr(window, "_GATHER_MAX_ELEMENTS", -1)  # no small-call gather
    for path, growth in (("slices", 0), ("frame", 10**9)):
        monkeypatch.setattr(conv, "_FRAME_MAX_GROWTH", growth)
        out, grads = run_case(case, inputs, grad_output, NUMPY, dtype)
        position = 0 if case.op == "conv2d" else None  # conv_transpose2d's forward is the col2im
        if position is None:
            assert_close(out, ref_out, dtype=dtype, what=f"{case} forward ({path})")
        else:
            assert_close(grads[0], ref_grads[0], dtype=dtype, what=f"{case} grad_input ({path})")


@pytest.mark.parametrize("index", CONV_INDICES, ids=[str(CASES[i]) for i in CONV_INDICES])
def test_gathered_windows_match_sliced(index, dtype, grad_input_method, monkeypatch):
    """NumPy's two im2col/col2im paths (one gather or scatter-add through a cached index for small
    calls, kh·kw slices for the rest) give bit-identical results, and torch's."""
    from portaconv import window

    results = {}
    for path, limit in (("slices", -1), ("gather", 10**9)):
        monkeypatch.setattr(window, "_GATHER_MAX_ELEMENTS", limit)
        results[path] = _run_against_torch(index, NUMPY, dtype, f"{CASES[index]} ({path})")
    for sliced, gathered in zip(results["slices"], results["gather"]):
        assert (sliced is None and gathered is None) or np.array_equal(sliced, gathered)


# CuPy, wherever a GPU is present, even when PORTACONV_BACKENDS leaves it out.
CUPY = [b for b in available_backends("") if b.name == "cupy"]


@pytest.mark.skipif(not CUPY, reason="needs CuPy and a GPU")
@pytest.mark.parametrize("index", CONV_INDICES, ids=[str(CASES[i]) for i in CONV_INDICES])
def test_window_kernels_match_generic(index, dtype, grad_input_method, monkeypatch):
    """CuPy's im2col/col2im raw kernels (portaconv._cuda) and the generic slice copies give
    bit-identical results, and torch's; the kernels run exactly when chosen."""
    from portaconv import _cuda, window

    calls = []
    for name in ("im2col", "col2im"):
        kernel = getattr(_cuda, name)
        monkeypatch.setattr(_cuda, name, lambda *args, _kernel=kernel, _name=name, **kwargs: calls.append(_name) or _kernel(*args, **kwargs))
    results = {}
    for path in ("generic", "auto"):
        monkeypatch.setattr(window, "WINDOW_KERNELS", path)
        calls.clear()
        results[path] = _run_against_torch(index, CUPY[0], dtype, f"{CASES[index]} ({path})")
        assert bool(calls) == (path == "auto"), f"kernels called: {calls}"
    for generic, kernels in zip(results["generic"], results["auto"]):
        assert (generic is None and kernels is None) or np.array_equal(generic, kernels, equal_nan=True)


def test_window_kernels_setting_is_checked(monkeypatch):
    from portaconv import window

    monkeypatch.setattr(window, "WINDOW_KERNELS", "fast")
    with pytest.raises(ValueError, match=r"WINDOW_KERNELS must be 'auto' or 'generic', got 'fast'"):
        F.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)))
