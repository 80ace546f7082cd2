"""The im2col workspace limit (``portaconv.options(workspace_limit=...)``): tiled results equal
untiled ones, the tiling splits the batch, then the output rows, then the kernel rows, and the
NumPy peak memory of conv2d + conv2d_backward stays within two column buffers of the limit."""

import functools
import tracemalloc

import numpy as np
import pytest

import portaconv
import portaconv.functional as F
from portaconv import to_numpy
from portaconv.primitives import dispatch
from portaconv.primitives.window import Window
from portaconv.testing import assert_close, to_backend

UNLIMITED = 1 << 40


# ---- tiled results equal untiled ones, on every backend ------------------------------------------

# (5, 4, 10, 11) input, 3×3 kernel, float64: one output row, one kernel row: 4·3·11·8 = 1056 bytes;
# one image of the padding-1 case: 1056·3·10 = 31680 bytes.
_ROW = 4 * 3 * 11 * 8
_LIMITS = {"batch": 2 * _ROW * 3 * 10, "rows": 2 * _ROW * 3 + 1, "kernel-rows": 2 * _ROW, "floor": 1}


@pytest.mark.parametrize("limit", list(_LIMITS.values()), ids=list(_LIMITS))
@pytest.mark.parametrize("params", [{"padding": 1}, {"stride": 2, "padding": 1, "groups": 2}, {"dilation": 2, "stride": (1, 2)}])
def test_chunked_equals_unchunked(backend, params, conv_algorithm, limit):
    """conv2d, its gradients and conv_transpose2d under a limit that splits the batch (2, 2, 1
    images), the output rows, the kernel rows (blocks of 2 and 1), or everything down to one kernel
    row of one output row, equal the untiled results."""
    if backend.name == "jax" and (params != {"padding": 1} or limit != _LIMITS["kernel-rows"]):
        pytest.skip("JAX runs the reference that array_api_strict and torch run; its per-op dispatch makes "
                    "many small tiles slow, so it runs one case (output rows and kernel rows tiled)")
    rng = np.random.default_rng(0)
    groups = params.get("groups", 1)
    x = to_backend(rng.standard_normal((5, 4, 10, 11)), backend, "float64")
    w = to_backend(rng.standard_normal((6, 4 // groups, 3, 3)), backend, "float64")
    w_transpose = to_backend(rng.standard_normal((4, 6 // groups, 2, 3)), backend, "float64")

    def run():
        out = F.conv2d(x, w, **params)
        g = to_backend(np.random.default_rng(1).standard_normal(tuple(out.shape)), backend, "float64")
        return [out, *F.conv2d_backward(g, x, w, **params)[:2], F.conv_transpose2d(x, w_transpose, **params)]

    with portaconv.options(workspace_limit=UNLIMITED):
        whole = run()
    with portaconv.options(workspace_limit=limit):
        tiled = run()
    for a, b in zip(whole, tiled):
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=1e-13, atol=1e-13)


# ---- the tiling rule -----------------------------------------------------------------------------


def test_conv_tiles_split_batch_then_rows_then_kernel_rows():
    """(images, output rows, kernel rows) per column buffer: as many whole images as fit; one image
    too large: as many whole output rows as fit; one output row too large: as many kernel rows as
    fit; one kernel row of one output row at the least."""
    window = Window(3, 3, 1, 1, 1, 1, 1, 1, 16, 16)  # 16×16 output
    per_row = 8 * 3 * 16 * 4  # 8 channels, kw 3, ow 16, float32: one output row, one kernel row
    per_output_row = per_row * 3
    per_image = per_output_row * 16
    assert (per_row, per_output_row, per_image) == (1536, 4608, 73728)

    def tiles(limit, batch=64):
        with portaconv.options(workspace_limit=limit):
            return dispatch.conv_tiles(batch, 8, window, 4)

    assert tiles(UNLIMITED) == (64, 16, 3), "everything in one buffer"
    assert tiles(64 * per_image) == (64, 16, 3)
    assert tiles(64 * per_image - 1) == (63, 16, 3)
    assert tiles(8 * per_image + per_image - 1) == (8, 16, 3), "whole images only"
    assert tiles(per_image) == (1, 16, 3)
    assert tiles(per_image - 1) == (1, 15, 3), "one image too large: output rows"
    assert tiles(2 * per_output_row) == (1, 2, 3)
    assert tiles(per_output_row) == (1, 1, 3)
    assert tiles(per_output_row - 1) == (1, 1, 2), "one output row too large: kernel rows"
    assert tiles(per_row) == (1, 1, 1)
    assert tiles(per_row - 1) == (1, 1, 1) and tiles(1) == (1, 1, 1), "the floor"
    assert tiles(UNLIMITED, batch=5) == (5, 16, 3), "never more images than the batch"
    assert tiles(UNLIMITED, batch=0) == (1, 16, 3), "an empty batch is one (empty) tile"
    assert tiles(8 * per_image, batch=1) == (1, 16, 3)
    with portaconv.options(workspace_limit=per_image):
        assert dispatch.conv_tiles(64, 8, window, 8) == (1, 8, 3), "float64 buffers are twice as large"

    # Everywhere: the buffer fits the limit unless it is the floor, and the next larger step would not fit.
    for limit in [1, 1000, per_row, per_row + 1, 3000, per_output_row + 7, 10**4, 5 * per_output_row, per_image - 5, per_image + 5, 10**6]:
        images, rows, kernel_rows = tiles(limit)
        size = images * rows * kernel_rows * per_row
        assert size <= limit or (images, rows, kernel_rows) == (1, 1, 1), limit
        if images > 1 or rows == 16:
            assert kernel_rows == 3 and rows == 16 and (images == 64 or (images + 1) * per_image > limit), limit
        elif kernel_rows == 3:
            assert rows < 16 and (rows + 1) * per_output_row > limit, limit
        else:
            assert rows == 1 and (kernel_rows + 1) * per_row > limit, limit


# ---- peak memory (NumPy, tracemalloc) ------------------------------------------------------------


def _peak(function):
    """Bytes ``function`` allocates at most (NumPy reports its buffers to tracemalloc); the result."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = function()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


# name: (input shape, weight shape, conv2d parameters, algorithm, limit, which tiling it forces)
_MEMORY_CASES = {
    # (a) a batch that must be split: 4 images' columns (4·802816 bytes) per buffer, 4 buffers.
    "batch": ((16, 4, 32, 32), (4, 4, 7, 7), {"padding": 3}, "im2col", 4 * 4 * 49 * 32 * 32 * 4, (4, 32, 7)),
    # Winograd's transform buffers obey the same limit (18 images per (16, 8, 18·64) buffer).
    "batch-winograd": ((64, 8, 16, 16), (8, 8, 3, 3), {"padding": 1}, "winograd", 8 * 9 * 64 * 16 * 16 * 4 // 8, None),
    # (b) one image whose column buffer (172 MB) exceeds L: 3 output rows (3·1.08 MB) per buffer.
    "rows": ((1, 1, 160, 160), (1, 1, 41, 41), {"padding": 20}, "auto", 4 << 20, (1, 3, 41)),
    # (c) one image where even one output row's columns (816 KB) exceed L: 64 kernel rows per buffer.
    "kernel-rows": ((1, 1, 120, 120), (1, 1, 101, 101), {}, "auto", 512 << 10, (1, 1, 64)),
}


@functools.lru_cache(maxsize=None)
def _measure(name, kernels):
    """The case's float32 (input, weight, output gradient), and the results and peak bytes of
    conv2d + conv2d_backward tiled under the case's limit and untiled. ``kernels="reference"``:
    the composed im2col route, whose column buffers the limit bounds (the NumPy kernels fuse
    im2col into the products and allocate no column matrix: see
    test_fused_convolution_allocates_no_column_matrix)."""
    shape, weight_shape, params, algorithm, limit, _ = _MEMORY_CASES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(weight_shape).astype(np.float32)
    with portaconv.options(algorithm=algorithm, kernels=kernels):
        g = rng.standard_normal(tuple(F.conv2d(x, w, **params).shape)).astype(np.float32)

        def run():
            out = F.conv2d(x, w, **params)
            grad_input, grad_weight, _ = F.conv2d_backward(g, x, w, **params)
            return out, grad_input, grad_weight

        # First calls compile and fill caches: keep them out of the measurements. Both settings:
        # tiled and untiled may run different builds (an untiled batch can reach numba's parallel
        # build, its tiles not), and a build compiled inside a measurement counts numba's memory.
        for setting in (limit, UNLIMITED):
            with portaconv.options(workspace_limit=setting):
                run()
        with portaconv.options(workspace_limit=limit):
            tiled_peak, tiled = _peak(run)
        with portaconv.options(workspace_limit=UNLIMITED):
            untiled_peak, untiled = _peak(run)
    return (x, w, g), tiled, tiled_peak, untiled, untiled_peak


def _torch_results(torch, x, w, g, params):
    """torch's conv2d output and gradients in float64."""
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    tw = torch.tensor(w.astype(np.float64), requires_grad=True)
    out = torch.nn.functional.conv2d(tx, tw, **params)
    out.backward(torch.tensor(g.astype(np.float64)))
    return out.detach().numpy(), tx.grad.numpy(), tw.grad.numpy()


@pytest.mark.parametrize("name", list(_MEMORY_CASES))
def test_tiled_results_equal_untiled_and_torch(torch, name):
    shape, weight_shape, params, algorithm, limit, expected_tiles = _MEMORY_CASES[name]
    if expected_tiles is not None:  # the case really tiles the way its name says
        window = Window(*weight_shape[2:], 1, 1, 1, 1, params.get("padding", 0), params.get("padding", 0), *_output(shape, weight_shape, params))
        with portaconv.options(workspace_limit=limit):
            assert dispatch.conv_tiles(shape[0], shape[1], window, 4) == expected_tiles
    (x, w, g), tiled, _, untiled, _ = _measure(name, "auto")
    expected = _torch_results(torch, x, w, g, params)
    for what, a, b, c in zip(("output", "grad_input", "grad_weight"), tiled, untiled, expected):
        assert_close(a, b, dtype="float32", what=f"{name}: tiled vs untiled {what}")
        assert_close(a, c, dtype="float32", what=f"{name}: tiled vs torch {what}")


@pytest.mark.parametrize("name", [name for name, case in _MEMORY_CASES.items() if case[3] != "winograd"])
def test_fused_convolution_allocates_no_column_matrix(name):
    """The NumPy kernels' fused convolution, untiled (no workspace limit), allocates the results,
    the slack of test_peak_memory_is_bounded, and per thread a block's columns and its product or
    gathered gradient (about dispatch.CONV_BLOCK_BYTES each, one output row's columns at least):
    not the column matrix that the composed route needs (tens of MB here)."""
    import numba

    pytest.importorskip("numba")
    shape, weight_shape, params, _, _, _ = _MEMORY_CASES[name]
    (x, w, g), _, _, _, untiled_peak = _measure(name, "auto")
    kh, kw = weight_shape[2:]
    per_row = (shape[1] * kh * kw + weight_shape[0]) * _output(shape, weight_shape, params)[1] * 4
    blocks = numba.config.NUMBA_NUM_THREADS * 2 * max(dispatch.CONV_BLOCK_BYTES, per_row)  # every thread numba has
    bound = x.nbytes + g.nbytes + w.nbytes + 2 * x.nbytes + g.nbytes + w.nbytes + (64 << 10) + blocks
    assert untiled_peak <= bound < _column_bytes(name), (name, untiled_peak, bound, _column_bytes(name))


def _column_bytes(name):
    """The float32 column matrix of a case's convolution: C·kh·kw × N·oh·ow."""
    shape, weight_shape, params, _, _, _ = _MEMORY_CASES[name]
    oh, ow = _output(shape, weight_shape, params)
    return shape[0] * shape[1] * weight_shape[2] * weight_shape[3] * oh * ow * 4


def _output(shape, weight_shape, params):
    pad = params.get("padding", 0)
    return tuple(size + 2 * pad - k + 1 for size, k in zip(shape[2:], weight_shape[2:]))




@pytest.mark.parametrize(
    "name",
    list(_MEMORY_CASES),
)
def test_peak_memory_is_bounded(name):
    """With ``options(workspace_limit=L)`` conv2d + conv2d_backward allocate at most their results
    (input, output and weight sizes), two column buffers of at most L each (the backward's columns
    and the input gradient's columns, or the fused convolution's block buffers), and a small slack: the input gradient's running sum and its
    next part (2 input sizes), the output's tiles before they are joined (1 output size), the
    weight gradient's partial sums (1 weight size) and 64 KiB of small objects."""
    _, _, _, algorithm, limit, _ = _MEMORY_CASES[name]
    # The defaults: on NumPy the fused convolution, whose block buffers obey the limit too.
    (x, w, g), _, tiled_peak, _, untiled_peak = _measure(name, "auto")
    input_bytes, output_bytes, weight_bytes = x.nbytes, g.nbytes, w.nbytes
    results = input_bytes + output_bytes + weight_bytes
    slack = 2 * input_bytes + output_bytes + weight_bytes + (64 << 10)
    bound = results + 2 * limit + slack
    # What the case needs without the limit: Winograd's untiled run; an im2col convolution's
    # column matrix (the composed route's buffer; the fused kernel needs none, see below).
    needs = untiled_peak if algorithm == "winograd" else _column_bytes(name)
    assert needs > bound, f"{name}: without the limit ({needs} bytes) the case really needs more"
    assert tiled_peak <= bound, (
        f"{name}: peak {tiled_peak} bytes with a {limit}-byte limit; bound {bound} = results {results} "
        f"+ 2 × limit + slack {slack}"
    )


# ---- the setting ---------------------------------------------------------------------------------


def test_workspace_limit_setting():
    """The limit is an option (default 256 MiB), scoped to its block; conv ops take no keyword for it."""
    assert portaconv.get_options().workspace_limit == 256 * 2**20
    with portaconv.options(workspace_limit=1 << 20):
        assert portaconv.get_options().workspace_limit == 1 << 20
        with portaconv.options(workspace_limit=4096):
            assert portaconv.get_options().workspace_limit == 4096
        assert portaconv.get_options().workspace_limit == 1 << 20
    assert portaconv.get_options().workspace_limit == 256 * 2**20
    previous = portaconv.set_options(workspace_limit=1 << 20)
    try:
        assert portaconv.get_options().workspace_limit == 1 << 20
    finally:
        portaconv.set_options(workspace_limit=previous.workspace_limit)
    assert portaconv.get_options().workspace_limit == 256 * 2**20
    for bad in (0, -5):
        with pytest.raises(ValueError, match=f"workspace_limit must be a positive number of bytes, got {bad}"):
            portaconv.options(workspace_limit=bad).__enter__()
    with pytest.raises(TypeError, match="workspace_limit"):
        F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 2, 2)), workspace_limit=1024)


# ---- threads and fork ----------------------------------------------------------------------------


# Large enough for the kernels' parallel builds (dispatch.PARALLEL_MIN_ELEMENTS), which start
# numba's threads; smaller calls run the serial builds and start none.
_THREADED_INPUT, _THREADED_WEIGHT = (4, 2, 100, 100), (3, 2, 3, 3)


def _conv_sum(queue):
    queue.put(float(np.sum(F.conv2d(np.ones(_THREADED_INPUT), np.ones(_THREADED_WEIGHT)))))


def _gnu_openmp_threads() -> bool:
    """Whether numba runs the NumPy kernels on GNU OpenMP (its fallback without TBB), which
    terminates a child forked after the kernels ran."""
    try:
        import numba
        from numba.np.ufunc import omppool
    except ImportError:
        return False
    F.conv2d(np.ones(_THREADED_INPUT), np.ones(_THREADED_WEIGHT))  # loads the kernels' threading layer
    return numba.threading_layer() == "omp" and omppool.openmp_vendor == "GNU"


@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")  # JAX, imported by conftest, is not used
@pytest.mark.skipif(
    _gnu_openmp_threads(),
    reason="numba runs on GNU OpenMP here (the tbb wheel, a dependency on x86_64, is missing), and "
    "GNU OpenMP terminates a child forked after the kernels ran: a documented limitation",
)
def test_threads_survive_fork():
    """A process forked after the compiled kernels ran on their threads still runs convolutions
    (the child inherits no worker threads)."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    import numba

    expected = float(np.sum(F.conv2d(np.ones(_THREADED_INPUT), np.ones(_THREADED_WEIGHT))))  # starts the threads
    assert numba.threading_layer() in ("tbb", "omp", "workqueue")  # raises if no thread pool started
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_conv_sum, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on the inherited threads")
    assert child.exitcode == 0, f"the forked child died (exit code {child.exitcode})"
    assert queue.get(timeout=5) == expected
