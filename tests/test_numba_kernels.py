"""The numba kernels give the reference's bits (NaN compared as equal) on random geometries:
kernels 1–4, strides 1–3, dilations 1–2, negative top/left, input dilation (im2col, col2im),
windows overhanging the bottom/right, empty batches and channels, NaN, ±inf and ties."""

import platform
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

import array_api_compat.numpy as xp  # noqa: E402

from portaconv.primitives import numba_kernels as nk  # noqa: E402
from portaconv.primitives.dispatch import (  # noqa: E402
    PARALLEL_MIN_ELEMENTS, POOL_PLANES, SPECIALIZED_POOL_WINDOWS, specialize_pool_window,
)
from portaconv.primitives import reference as ref  # noqa: E402
from portaconv.primitives.window import Window  # noqa: E402

# NaN and ±inf inputs make the references' additions warn ("invalid value encountered").
pytestmark = pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")

DTYPES = ["float32", "float64"]
CASES = 60


def _axis(rng, size, *, negative, dilate):
    k, s, d = int(rng.integers(1, 5)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
    l = int(rng.integers(1, 4)) if dilate else 1
    low = -2 if negative else 0
    front = int(rng.integers(low, 3))
    back = int(rng.integers(-1, 3))  # > 0: ceil-mode-like windows overhanging the end
    o = (size * l - (l - 1) + front + back - d * (k - 1) - 1) // s + 1
    return k, s, d, front, o, l


def _geometries(seed, *, negative=True, dilate=False):
    """(shape, Window) pairs, input dilation only with ``dilate`` (windows of padding only occur)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < CASES:
        n, c = int(rng.integers(0, 4)), int(rng.integers(0, 4))
        h, w = int(rng.integers(1, 10)), int(rng.integers(1, 10))
        kh, sh, dh, top, oh, lh = _axis(rng, h, negative=negative, dilate=dilate)
        kw, sw, dw, left, ow, lw = _axis(rng, w, negative=negative, dilate=dilate)
        if oh < 1 or ow < 1:
            continue
        out.append(((n, c, h, w), Window(kh, kw, sh, sw, dh, dw, top, left, oh, ow, lh, lw)))
    return out


def _values(rng, shape, dtype, kind):
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "ties":
        x = rng.integers(-2, 3, size=shape).astype(float)
    else:  # "special": ties plus NaN, ±inf and −0.0
        x = rng.integers(-2, 3, size=shape).astype(float)
        specials = np.array([np.nan, np.inf, -np.inf, -0.0])
        mask = rng.random(shape) < 0.3
        x[mask] = rng.choice(specials, size=int(mask.sum()))
    return x.astype(dtype)


def _same(got, want):
    want = np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want, strict=True)
    # assert_array_equal calls 0.0 and −0.0 equal: compare the bits of everything but NaN.
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    assert np.array_equal(np.signbit(got[~nan]), np.signbit(want[~nan]))


KINDS = ["normal", "ties", "special"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_col2im(dtype):
    rng = np.random.default_rng(1)
    for shape, w in _geometries(10, dilate=True):
        x = _values(rng, shape, dtype, rng.choice(KINDS))
        _same(nk.im2col(x, w, xp), ref.im2col(x, w, xp))
        # A transposed (non-contiguous) input.
        xt = np.ascontiguousarray(np.swapaxes(x, 0, 1)).swapaxes(0, 1)
        _same(nk.im2col(xt, w, xp), ref.im2col(x, w, xp))
        cols = _values(rng, (shape[1] * w.taps, shape[0] * w.oh * w.ow), dtype, rng.choice(KINDS))
        _same(nk.col2im(cols, shape, w, xp), ref.col2im(cols, shape, w, xp))


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool(dtype):
    rng = np.random.default_rng(2)
    for shape, w in _geometries(20):
        kind = rng.choice(KINDS)
        x = _values(rng, shape, dtype, kind)
        best, taps = nk.max_pool(x, w, xp)
        want_best, want_taps = ref.max_pool(x, w, xp)
        _same(best, want_best)
        _same(taps, np.asarray(want_taps))
        best, none = nk.max_pool(x, w, xp, taps=False)
        assert none is None
        _same(best, want_best)

        grad = _values(rng, best.shape, dtype, rng.choice(KINDS))
        _same(nk.max_pool_backward(grad, x, w, xp), ref.max_pool_backward(grad, x, w, xp))
        _same(nk.max_pool_scatter(grad, want_taps, shape, w, xp), ref.max_pool_scatter(grad, want_taps, shape, w, xp))
        # Taps of another integer dtype, some out of range (they reach no pixel).
        other = rng.integers(-1, w.taps + 1, size=best.shape).astype(np.int16)
        _same(nk.max_pool_scatter(grad, other, shape, w, xp), ref.max_pool_scatter(grad, other, shape, w, xp))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", sorted(SPECIALIZED_POOL_WINDOWS))
def test_max_pool_kernels_compiled_for_one_window(window, dtype):
    """The kernels compiled for a window geometry (dispatch.SPECIALIZED_POOL_WINDOWS) give the
    reference's bits: padding (negative top/left), windows overhanging the end, NaN, ±inf, ties."""
    kh, kw, sh, sw = window
    rng = np.random.default_rng(kh * 10 + sh)
    for _ in range(12):
        n, c, h, w_ = int(rng.integers(0, 3)), int(rng.integers(1, 3)), int(rng.integers(1, 12)), int(rng.integers(1, 12))
        top, left = int(rng.integers(-1, kh // 2 + 1)), int(rng.integers(-1, kw // 2 + 1))
        oh = (h + top + int(rng.integers(0, 2)) - kh) // sh + 1
        ow = (w_ + left + int(rng.integers(0, 2)) - kw) // sw + 1
        if oh < 1 or ow < 1:
            continue
        w = Window(kh, kw, sh, sw, 1, 1, top, left, oh, ow)
        assert specialize_pool_window(kh, kw, sh, sw, 1, 1, 1, 1)
        x = _values(rng, (n, c, h, w_), dtype, rng.choice(KINDS))
        best, taps = nk.max_pool(x, w, xp)
        want_best, want_taps = ref.max_pool(x, w, xp)
        _same(best, want_best)
        _same(taps, np.asarray(want_taps))
        _same(nk.max_pool(x, w, xp, taps=False)[0], want_best)
        grad = _values(rng, best.shape, dtype, rng.choice(KINDS))
        _same(nk.max_pool_backward(grad, x, w, xp), ref.max_pool_backward(grad, x, w, xp))
        _same(nk.max_pool_scatter(grad, want_taps, x.shape, w, xp), ref.max_pool_scatter(grad, want_taps, x.shape, w, xp))
        other = rng.integers(-1, w.taps + 1, size=best.shape).astype(np.int32)  # some reach no pixel
        _same(nk.max_pool_scatter(grad, other, x.shape, w, xp), ref.max_pool_scatter(grad, other, x.shape, w, xp))


def _check_max_pool_kernels(rng, x, w):
    """The forward (with and without taps), the backward and the scatter give the reference's bits."""
    best, taps = nk.max_pool(x, w, xp)
    want_best, want_taps = ref.max_pool(x, w, xp)
    _same(best, want_best)
    _same(taps, np.asarray(want_taps))
    _same(nk.max_pool(x, w, xp, taps=False)[0], want_best)
    grad = _values(rng, best.shape, x.dtype, "normal")
    _same(nk.max_pool_backward(grad, x, w, xp), ref.max_pool_backward(grad, x, w, xp))
    _same(nk.max_pool_scatter(grad, taps, x.shape, w, xp), ref.max_pool_scatter(grad, want_taps, x.shape, w, xp))


@pytest.mark.parametrize("w", [
    Window(3, 3, 2, 2, 1, 1, 1, 1, 34, 33),  # compiled for its window
    Window(3, 2, 1, 2, 2, 1, 1, 0, 65, 33),  # the generic build (dilated)
], ids=["3x3/2 p1", "3x2 stride (1,2) dilation (2,1)"])
def test_max_pool_parallel_builds(w):
    # Large enough for the parallel builds (dispatch.PARALLEL_MIN_ELEMENTS), with and without taps.
    rng = np.random.default_rng(5)
    x = _values(rng, (2, 8, 67, 66), "float32", "ties")
    assert x.size >= PARALLEL_MIN_ELEMENTS
    _check_max_pool_kernels(rng, x, w)


@pytest.mark.parametrize("w", [
    Window(2, 2, 2, 2, 1, 1, 0, 0, 11, 11),  # seed-cnn's pooling, compiled for its window
    Window(3, 3, 2, 2, 1, 1, 1, 1, 12, 12),  # padding: border windows beside the interior ones
    Window(2, 3, 1, 2, 2, 1, 0, 1, 21, 12),  # the generic build (dilated)
], ids=["2x2/2", "3x3/2 p1", "2x3 stride (1,2) dilation (2,1) p(0,1)"])
@pytest.mark.parametrize("height", [23, 9], ids=["parallel", "serial"])
def test_max_pool_plane_blocks(w, height):
    """The forward and the backward take their interior windows dispatch.POOL_PLANES planes at a
    time: 140 planes are two whole blocks and a partial one, each with its border windows."""
    rng = np.random.default_rng(6)
    planes = 2 * POOL_PLANES + 12
    x = _values(rng, (2, planes // 2, height, height), "float32", "special")
    assert (x.size >= PARALLEL_MIN_ELEMENTS) == (height == 23)
    w = Window(w.kh, w.kw, w.sh, w.sw, w.dh, w.dw, w.top, w.left, (height + 2 * w.top - w.dh * (w.kh - 1) - 1) // w.sh + 1,
               (height + 2 * w.left - w.dw * (w.kw - 1) - 1) // w.sw + 1)
    _check_max_pool_kernels(rng, x, w)


def test_max_pool_windows_of_padding_and_all_minus_inf():
    # Dilation 2 with padding 1 over a 1-pixel input: windows of padding only, and −inf inputs.
    w = Window(2, 2, 1, 1, 2, 2, 1, 1, 2, 2)
    for value in (-np.inf, np.nan, 1.0):
        x = np.full((2, 2, 1, 1), value)
        best, taps = nk.max_pool(x, w, xp)
        want_best, want_taps = ref.max_pool(x, w, xp)
        _same(best, want_best)
        _same(taps, np.asarray(want_taps))
        grad = np.arange(16.0).reshape(2, 2, 2, 2)
        _same(nk.max_pool_backward(grad, x, w, xp), ref.max_pool_backward(grad, x, w, xp))


@pytest.mark.parametrize("dtype", DTYPES)
def test_window_sum_spread(dtype):
    rng = np.random.default_rng(3)
    for shape, w in _geometries(30):
        x = _values(rng, shape, dtype, rng.choice(KINDS))
        _same(nk.window_sum(x, w, xp), ref.window_sum(x, w, xp))
        grad = _values(rng, (*shape[:2], w.oh, w.ow), dtype, rng.choice(KINDS))
        _same(nk.window_spread(grad, shape, w, xp), ref.window_spread(grad, shape, w, xp))


def test_negative_zeros():
    # A sum of −0.0 taps is −0.0 (tap0 + tap1 + ...); a pixel sums from 0.0, so it is +0.0.
    x = np.full((1, 2, 5, 5), -0.0)
    windows = [Window(1, 1, 1, 1, 1, 1, 0, 0, 5, 5), Window(2, 3, 1, 2, 1, 1, 0, 0, 4, 2), Window(3, 3, 2, 2, 1, 1, 1, 1, 3, 3)]
    for w in windows:
        _same(nk.window_sum(x, w, xp), ref.window_sum(x, w, xp))
        grad = np.full((1, 2, w.oh, w.ow), -0.0)
        _same(nk.window_spread(grad, x.shape, w, xp), ref.window_spread(grad, x.shape, w, xp))
        _same(nk.max_pool_backward(grad, x, w, xp), ref.max_pool_backward(grad, x, w, xp))
        _same(nk.max_pool(x, w, xp)[0], ref.max_pool(x, w, xp)[0])
        cols = np.full((2 * w.taps, w.oh * w.ow), -0.0)
        _same(nk.col2im(cols, x.shape, w, xp), ref.col2im(cols, x.shape, w, xp))


@pytest.mark.parametrize("dtype", DTYPES)
def test_to_nchw(dtype):
    rng = np.random.default_rng(4)
    for n, k, oh, ow in [(0, 3, 2, 2), (2, 0, 1, 1), (3, 4, 5, 2), (1, 1, 1, 1), (2, 5, 3, 7)]:
        y = _values(rng, (k, n * oh * ow), dtype, "special")
        bias = _values(rng, (k,), dtype, "special")
        for b in (None, bias):
            got = nk.to_nchw(y, b, (n, k, oh, ow), xp)
            assert got.flags.c_contiguous
            _same(got, ref.to_nchw(y, b, (n, k, oh, ow), xp))


def test_num_threads_option():
    import numba

    import portaconv._options as options

    # Large enough for the parallel build, the one that reads numba's thread count.
    x = np.random.default_rng(5).standard_normal((2, 3, 100, 100))
    w = Window(3, 3, 1, 1, 1, 1, 1, 1, 100, 100)
    assert w.taps * x.size >= PARALLEL_MIN_ELEMENTS
    before = numba.get_num_threads()
    try:
        with options.options(num_threads=1):
            _same(nk.im2col(x, w, xp), ref.im2col(x, w, xp))
            assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)


def test_registered():
    from portaconv.primitives import dispatch

    for name in nk.__all__:
        assert dispatch.implementation(name, xp, np.dtype("float32")) is getattr(nk, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 8, 67, 66)], ids=["serial", "parallel"])
def test_relu_grad(shape, dtype):
    # Zeros of both signs, ±inf and NaN in the input and in the gradient: the reference's bits.
    rng = np.random.default_rng(6)
    x = _values(rng, shape, dtype, "special")
    grad = _values(rng, shape, dtype, "special")
    x.reshape(-1)[:4] = [0.0, -0.0, np.nan, -np.inf]
    _same(nk.relu_grad(grad, x, xp), ref.relu_grad(grad, x, xp))
    _same(nk.relu_grad(grad, x.astype(np.float64), xp), ref.relu_grad(grad, x.astype(np.float64), xp))
    xt = np.swapaxes(x, 0, 1)  # non-contiguous
    _same(nk.relu_grad(np.swapaxes(grad, 0, 1), xt, xp), ref.relu_grad(np.swapaxes(grad, 0, 1), xt, xp))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (3, 4, 5), (2, 8, 67, 66)], ids=["0-d", "serial", "parallel"])
def test_relu(shape, dtype):
    # NaN kept, ±inf, and −0.0 kept as torch keeps it: the reference's bits, also for a
    # non-contiguous input.
    rng = np.random.default_rng(5)
    x = _values(rng, shape, dtype, "special")
    if x.ndim:
        x.reshape(-1)[:4] = [0.0, -0.0, np.nan, -np.inf]
    got = nk.relu(x, xp)
    assert got.shape == x.shape and got.dtype == x.dtype
    _same(got, ref.relu(x, xp))
    assert np.signbit(nk.relu(np.full((3,), -0.0, dtype), xp)).all()
    if x.ndim:
        xt = np.swapaxes(x, 0, 1)
        _same(nk.relu(xt, xp), ref.relu(xt, xp))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", [
    ((64, 10), 1), ((1, 10), -1), ((3, 4, 5), 0), ((3, 4, 5), 1), ((2, 5, 7, 9), 1), ((7,), 0), ((4, 1), 1),
    ((700, 100), 1),  # the parallel builds
    ((), 0),  # (0-d: the reference)
], ids=str)
def test_log_softmax(shape, axis, dtype):
    """log_softmax and its backward along any axis against the reference computed in float64:
    to the dtype's rounding (the kernels sum in float64 and round once, closer to it than the
    float32 reference), NaN where the reference has NaN: a slice holding NaN, +inf, or only −inf;
    logits of ±1e4 finite. A non-contiguous input too."""
    rng = np.random.default_rng(9)
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    tol = dict(rtol=1e-5, atol=5e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    if x.ndim == 2 and x.shape[0] >= 4 and x.shape[1] >= 3:
        x[0, :3] = [1.0, np.nan, 2.0]
        x[1, :3] = [np.inf, 0.0, 1.0]
        x[2, :] = -np.inf
        x[3, :3] = [1e4, -1e4, 0.0]
    for a, g in ((x, grad), (np.swapaxes(x, 0, -1), np.swapaxes(grad, 0, -1))) if x.ndim else ((x, grad),):
        with np.errstate(invalid="ignore"):
            a64, g64 = a.astype(np.float64), g.astype(np.float64)
            want, want_grad = ref.log_softmax(a64, axis, xp), ref.log_softmax_backward(g64, a64, axis, xp)
        got, got_grad = nk.log_softmax(a, axis, xp), nk.log_softmax_backward(g, a, axis, xp)
        assert got.shape == a.shape and got.dtype == a.dtype and got_grad.dtype == a.dtype
        np.testing.assert_allclose(got, want, equal_nan=True, **tol)
        np.testing.assert_allclose(got_grad, want_grad, equal_nan=True, **tol)
        if x.ndim == 2 and x.shape[0] >= 4 and x.shape[1] >= 3 and a is x:
            assert np.isnan(got[:3]).all() and np.isfinite(got[3]).all()


@pytest.mark.parametrize("a_shape, b_shape", [
    ((5, 7), (7, 3)),  # below OpenBLAS's threading: one np.matmul
    ((64, 288), (288, 4000)),  # split by columns over numba's threads
    ((4000, 288), (288, 64)),  # split by rows
    ((3, 300, 200), (200, 150)),  # a stack, the second operand broadcast
    ((2, 9, 20000), (1, 20000, 32)),  # tiny result, long inner dimension: summed by blocks, stacked
    ((9, 40001), (40001, 2)),  # a last block shorter than the others
])
@pytest.mark.parametrize("num_threads", [None, 1])
def test_matmul_routes(a_shape, b_shape, num_threads):
    # Each route the NumPy product takes gives a @ b (to float32 rounding: BLAS's own order), on
    # numba's threads and on one.
    import portaconv
    from portaconv.primitives import numpy_products

    rng = np.random.default_rng(7)
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    with portaconv.options(num_threads=num_threads):
        got = numpy_products.matmul(a, b, xp)
        assert got.shape == want.shape and got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(a_shape[-1]))
        # float64 in, float64 out, tight; and an operand BLAS cannot read in place (every other
        # column of a wider array) goes to np.matmul.
        np.testing.assert_allclose(numpy_products.matmul(a.astype(np.float64), b.astype(np.float64), xp), want, rtol=1e-12, atol=1e-10)
        strided = np.repeat(a.astype(np.float64), 2, axis=-1)[..., ::2]
        np.testing.assert_allclose(numpy_products.matmul(strided, b.astype(np.float64), xp), want, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["rows", "transposed", "strided"])
@pytest.mark.parametrize("a_shape, b_shape", [((4000, 288), (288, 64)), ((64, 288), (288, 4000))])
def test_split_product_gives_numpys_bits(a_shape, b_shape, layout, dtype):
    # The split product calls NumPy's own cblas gemm per block of the result (rows or columns), on
    # one BLAS thread, with the transposition flags NumPy passes for the operands' layouts: each
    # block holds np.matmul's very bits for that block, in row-major and transposed (BLAS reads
    # both in place) layouts. (Not the whole product's bits: OpenBLAS's kernels for some CPUs,
    # AMD's Zen among them, round a row differently with the block it is computed in.) A layout
    # BLAS cannot read in place (every other column) goes to np.matmul itself.
    import numba

    import portaconv
    from portaconv.primitives import numpy_products

    rng = np.random.default_rng(8)
    a = rng.standard_normal(a_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype)
    if layout == "transposed":
        a, b = np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T
    elif layout == "strided":
        a = np.repeat(a, 2, axis=1)[:, ::2]
    if not numpy_products._gemms():
        # NumPy's Linux x86-64 wheels carry scipy-openblas, which must be found there.
        assert not (sys.platform == "linux" and platform.machine() == "x86_64"), "NumPy's BLAS was not found"
        pytest.skip("NumPy's BLAS has no CBLAS symbols portaconv knows: products are plain np.matmul")
    blocks = min(2, numba.config.NUMBA_NUM_THREADS)
    with portaconv.options(num_threads=blocks):
        got = numpy_products.matmul(a, b, xp)
    assert got.flags.c_contiguous
    rows, columns = a.shape[0], b.shape[1]
    with numpy_products._OneBlasThread():
        if layout == "strided" or blocks == 1:
            want = np.matmul(a, b)
        elif rows >= columns:
            want = np.concatenate([np.matmul(a[i * rows // blocks:(i + 1) * rows // blocks], b) for i in range(blocks)], axis=0)
        else:
            want = np.concatenate([np.matmul(a, b[:, i * columns // blocks:(i + 1) * columns // blocks]) for i in range(blocks)], axis=1)
    assert np.array_equal(got, want)
    np.testing.assert_allclose(got, np.matmul(a, b), rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-4 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (64, 32, 26, 26), (1, 5, 1, 1), (3, 2, 7, 3)])
def test_channel_sum(shape, dtype):
    """A convolution's bias gradient against the reference (NumPy's sum over N, H, W): bit for bit
    on small integers with NaN, ±inf and −0.0 (every order gives the same sums), to the dtype's
    rounding on normal values (the kernel sums in float64); an all −0.0 channel sums to +0.0 as
    NumPy's does. The largest shape runs the parallel build."""
    rng = np.random.default_rng(12)
    for kind in KINDS:
        grad = _values(rng, shape, dtype, kind)
        got, want = nk.channel_sum(grad, xp), ref.channel_sum(grad, xp)
        assert got.shape == (shape[1],) and got.dtype == grad.dtype
        if kind == "normal":
            np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-12, atol=0)
        else:
            _same(got, want)
    _same(nk.channel_sum(np.full(shape, -0.0, dtype), xp), ref.channel_sum(np.full(shape, -0.0, dtype), xp))


# ---- the fused convolutions (numba_conv) ---------------------------------------------------------


def _conv_cases(seed):
    """(x shape, Window, out channels, groups): the random geometries, with groups where the
    channels allow, plus "same" 3×3 convolutions (the contiguous-run path), the last large enough
    for the parallel builds, and stride-1 outputs narrower than the input (the runs' wide rows,
    with columns past ow): a valid 3×3, a 5×5 with padding 1 (padding columns too), a dilated
    kernel with left padding only."""
    rng = np.random.default_rng(seed)
    cases = []
    for shape, w in _geometries(seed, dilate=True):
        groups = int(rng.choice([g for g in (1, 2, 3) if shape[1] % g == 0]))
        cases.append((shape, w, groups * int(rng.integers(1, 4)), groups))
    for n, c, size, k, groups in [(3, 8, 13, 16, 1), (2, 6, 30, 9, 3), (1, 16, 64, 8, 2)]:
        cases.append(((n, c, size, size), Window(3, 3, 1, 1, 1, 1, 1, 1, size, size), k, groups))
    for shape, w, k, groups in [
        ((3, 4, 13, 13), Window(3, 3, 1, 1, 1, 1, 0, 0, 11, 11), 5, 1),
        ((2, 6, 9, 12), Window(5, 5, 1, 1, 1, 1, 1, 1, 7, 10), 4, 2),
        ((2, 3, 10, 11), Window(3, 3, 1, 1, 2, 2, 0, 1, 6, 8), 3, 1),
    ]:
        cases.append((shape, w, k, groups))
    return cases


def _check_conv(got, want, kind, dtype):
    """Bit for bit on small integers (every sum exact in any order: a test of the indexing and of
    NaN/inf), else to the dtype's rounding (the fused kernels sum in blocks)."""
    if kind == "normal":
        np.testing.assert_allclose(got, want, rtol=0, atol=(1e-4 if dtype == "float32" else 1e-12) * max(1.0, np.abs(want).max(initial=0)))
        assert got.shape == want.shape and got.dtype == want.dtype
    else:
        _same(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("limit", [None, 1], ids=["blocks", "one-row-blocks"])
def test_conv_im2col_forward_and_backward(dtype, limit):
    """The fused forward and backward against the composed reference (im2col, matmul, to_nchw,
    col2im): inputs, weights, biases and gradients with NaN, ±inf and −0.0, blocks of many
    output rows or (a workspace limit of one byte) of one row each."""
    import portaconv
    from portaconv.primitives import numba_conv as nc

    rng = np.random.default_rng(7)
    options = {} if limit is None else {"workspace_limit": limit}
    for shape, w, out_channels, groups in _conv_cases(8):
        kind = str(rng.choice(KINDS))
        x = _values(rng, shape, dtype, kind)
        weight = _values(rng, (out_channels, shape[1] // groups, w.kh, w.kw), dtype, kind)
        bias = _values(rng, (out_channels,), dtype, kind) if rng.random() < 0.7 else None
        grad = _values(rng, (shape[0], out_channels, w.oh, w.ow), dtype, kind)
        with portaconv.options(reference=True):
            want_out, _ = ref.conv_im2col(x, weight, bias, w, groups, xp)
            want = ref.conv_im2col_backward(grad, x, weight, w, groups, shape, xp)
        with portaconv.options(**options):
            out, kept = nc.conv_im2col(x, weight, bias, w, groups, xp, keep=True)
            got = nc.conv_im2col_backward(grad, x, weight, w, groups, shape, xp)
            only_input = nc.conv_im2col_backward(grad, None, weight, w, groups, shape, xp, weight_grad=False)
            only_weight = nc.conv_im2col_backward(grad, x, None, w, groups, shape, xp, input_grad=False)
        assert only_input[1] is None and only_weight[0] is None
        _check_conv(out, want_out, kind, dtype)
        for got_grad, want_grad in zip(got, want):
            _check_conv(got_grad, want_grad, kind, dtype)
        _check_conv(only_input[0], want[0], kind, dtype)
        _check_conv(only_weight[1], want[1], kind, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_wide_rows_keep_one_non_finite_value_in_its_taps(dtype):
    """A valid 3×3 convolution, whose columns are laid out in rows as wide as the input (entries
    past ow are not outputs): one inf in the input's last column, which tap column 0 reads only
    past ow, must not reach the weight gradient of tap columns 0 and 1; one inf in the weight at
    tap column 0 must not reach the input gradient of the last column, which only tap column 2
    reads. Small integers elsewhere: the kernels' sums equal the reference's bit for bit."""
    from portaconv.primitives import numba_conv as nc

    rng = np.random.default_rng(11)
    shape, w = (2, 3, 7, 7), Window(3, 3, 1, 1, 1, 1, 0, 0, 5, 5)
    x = _values(rng, shape, dtype, "ties")
    weight = _values(rng, (4, 3, 3, 3), dtype, "ties")
    grad = _values(rng, (2, 4, 5, 5), dtype, "ties")
    x[1, 2, 3, 6] = np.inf
    weight[2, 1, 1, 0] = -np.inf
    want = ref.conv_im2col_backward(grad, x, weight, w, 1, shape, xp)
    got = nc.conv_im2col_backward(grad, x, weight, w, 1, shape, xp)
    assert np.isfinite(want[1][:, :, :, :2]).all() and np.isfinite(want[0][:, :, :, 6]).all()
    _same(got[0], want[0])
    _same(got[1], want[1])
    _same(nc.conv_im2col(x, weight, None, w, 1, xp)[0], ref.conv_im2col(x, weight, None, w, 1, xp)[0])


def test_conv_im2col_threads_share_the_work():
    """The parallel builds (batch and planes above dispatch.PARALLEL_MIN_ELEMENTS) on one thread and
    on numba's threads: the forward gives the same bits, the backward the same gradients up to
    the order in which the threads' weight-gradient copies are added."""
    import portaconv
    from portaconv.primitives import dispatch, numba_conv as nc

    for name in nc.__all__:
        assert dispatch.implementation(name, xp, np.dtype("float64")) is getattr(nc, name)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 8, 48, 48))
    weight, grad = rng.standard_normal((6, 8, 3, 3)), rng.standard_normal((5, 6, 48, 48))
    w = Window(3, 3, 1, 1, 1, 1, 1, 1, 48, 48)
    assert x.size >= PARALLEL_MIN_ELEMENTS
    with portaconv.options(num_threads=1):
        one = nc.conv_im2col(x, weight, None, w, 1, xp)[0], nc.conv_im2col_backward(grad, x, weight, w, 1, x.shape, xp)
    many = nc.conv_im2col(x, weight, None, w, 1, xp)[0], nc.conv_im2col_backward(grad, x, weight, w, 1, x.shape, xp)
    _same(many[0], one[0])
    _same(many[1][0], one[1][0])  # each image on one thread: the same adds in the same order
    np.testing.assert_allclose(many[1][1], one[1][1], rtol=1e-12)


def test_conv_im2col_keeps_no_columns_and_reads_strided_inputs():
    """The fused forward never materializes the column matrix (``keep`` gives None) and reads
    non-contiguous inputs, weights and gradients."""
    from portaconv.primitives import numba_conv as nc

    rng = np.random.default_rng(10)
    x = np.swapaxes(rng.standard_normal((4, 3, 9, 9)), 0, 1)  # (3, 4, 9, 9), strided
    weight = np.swapaxes(rng.standard_normal((4, 5, 3, 3)), 0, 1)  # (5, 4, 3, 3)
    w = Window(3, 3, 2, 2, 1, 1, 0, 0, 4, 4)
    grad = np.swapaxes(rng.standard_normal((5, 3, 4, 4)), 0, 1)  # (3, 5, 4, 4), strided
    out, kept = nc.conv_im2col(x, weight, None, w, 1, xp, keep=True)
    assert kept is None
    want, _ = ref.conv_im2col(np.ascontiguousarray(x), np.ascontiguousarray(weight), None, w, 1, xp)
    np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-13)
    got = nc.conv_im2col_backward(grad, x, weight, w, 1, x.shape, xp)
    expected = ref.conv_im2col_backward(grad, np.ascontiguousarray(x), np.ascontiguousarray(weight), w, 1, x.shape, xp)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-13, atol=1e-13)
