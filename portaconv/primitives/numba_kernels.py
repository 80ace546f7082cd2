"""The NumPy family's kernels: numba-compiled (``parallel=True``, ``cache=True``) versions of the
primitives in :mod:`~portaconv.primitives.reference`, registered in
:mod:`~portaconv.primitives.dispatch` when this module is imported.

Each kernel gives the reference's bits, float32 and float64: copies copy, and every sum adds the
same terms in the same order (a pixel sums its taps in tap order ``k = i·kw + j`` from 0.0; a
window sum is ``tap0 + tap1 + ...``). Accumulators have the array's dtype (typed zeros, never a
float64 literal), and ``fastmath`` is off. The exceptions are the long sums of ``channel_sum`` and
``log_softmax`` (and its backward): they sum in float64 and round once, so they equal the
reference to the dtype's rounding, closer to the exact value than a float32 sum.

Geometry (see :class:`~portaconv.primitives.window.Window`) becomes two small tables per call,
one per axis: ``table[i, a]`` is the input row of kernel row ``i`` at output row ``a``, −1 outside
the dilated input (padding) or −2 on a row the input dilation (``lh``) inserts, so no kernel
divides per element; every kernel, col2im included, takes any (lh, lw). Every kernel is parallel
over independent outputs: im2col over column-matrix rows (c, i, j), to_nchw over (n, k), the
max-pool forward over blocks of ``dispatch.POOL_PLANES`` planes, the rest over (n, c) planes, so
the scatters have no races. The max-pool scatters visit windows in reverse
row-major order, which gives each pixel its windows in ascending tap order, the reference's.
The max-pool kernels are one body compiled twice: with the window's geometry as arguments, and,
for the windows networks use (``dispatch.SPECIALIZED_POOL_WINDOWS``), once per geometry with it
as constants, so the tap loops unroll and the loops over windows vectorize.

The wrappers validate nothing (callers already did) and honour
``portaconv.options(num_threads=...)``. Called concurrently from several Python threads they need
a thread-safe numba threading layer (``tbb``, a dependency on x86-64, or ``omp``; numba tries
them in that order).
"""

from __future__ import annotations

import functools
import math
import types

import numba
import numpy as np
from numba import njit, prange

from .._options import get_options
from . import reference
from .dispatch import PARALLEL_MIN_ELEMENTS, POOL_PLANES, register, specialize_pool_window

__all__ = [
    "im2col",
    "col2im",
    "max_pool",
    "max_pool_backward",
    "max_pool_scatter",
    "window_sum",
    "window_spread",
    "to_nchw",
    "relu",
    "relu_grad",
    "log_softmax",
    "log_softmax_backward",
    "channel_sum",
]

class _Kernel:
    """A kernel compiled twice: parallel (``prange`` over numba's threads) and serial (``prange``
    as ``range``), the serial one for calls whose largest array holds fewer than
    ``dispatch.PARALLEL_MIN_ELEMENTS`` elements, where starting the threads costs more than it
    saves. Both compute the same bits (every output is written by one iteration either way),
    unless ``fastmath`` lets LLVM reorder a sum (see :func:`_channel_sum`)."""

    def __init__(self, fn, *, fastmath=False):
        self.parallel = njit(parallel=True, cache=True, fastmath=fastmath)(fn)
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__, fn.__closure__)
        serial.__qualname__ = fn.__qualname__ + "_serial"  # its own on-disk cache entry
        self.serial = njit(parallel=False, cache=True, fastmath=fastmath)(serial)

    def __call__(self, *args):
        for a in args:
            if type(a) is np.ndarray and a.size >= PARALLEL_MIN_ELEMENTS:  # (the wrappers pass plain ndarrays)
                _threads()  # only the parallel build reads numba's thread count
                return self.parallel(*args)
        return self.serial(*args)


_kernel = _Kernel


def _keep_freed_memory() -> bool:
    """Keep freed memory mapped in this process (glibc only; returns whether it was applied).

    NumPy allocates every array through malloc, and glibc hands large freed blocks back to the OS,
    so the next column matrix of that size is faulted in again page by page: a convolution's
    forward and backward allocate several buffers of its column matrix's size, and those page
    faults cost as much as the kernels (docs/performance.md). Raising glibc's mmap and trim
    thresholds keeps the pages mapped, as a caching allocator would. Process-wide and applied once,
    when the NumPy kernels load; the price is that memory freed by NumPy stays in the process.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 31))


KEEPS_FREED_MEMORY = _keep_freed_memory()


def _threads():
    """Apply ``get_options().num_threads`` to numba (clamped to the threads numba started; None:
    all of them, so a finished ``options(num_threads=...)`` block leaves nothing behind)."""
    wanted = get_options().num_threads
    wanted = numba.config.NUMBA_NUM_THREADS if wanted is None else min(wanted, numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != wanted:
        numba.set_num_threads(wanted)


def _geometry(w):
    return w.kh, w.kw, w.sh, w.sw, w.dh, w.dw, w.top, w.left, w.oh, w.ow, w.lh, w.lw


# ---- geometry tables (compiled, serial) --------------------------------------------------------


@njit(cache=True)
def _table(k, d, s, pad, o, size, l):
    """(k, o) int64: input index of tap ``i`` at output ``a`` along one axis; −1 outside the
    dilated input, −2 on a position the input dilation ``l`` inserts (a zero)."""
    out = np.empty((k, o), dtype=np.int64)
    last = (size - 1) * l
    for i in range(k):
        for a in range(o):
            v = a * s + i * d - pad
            if v < 0 or v > last:
                out[i, a] = -1
            elif v % l != 0:
                out[i, a] = -2
            else:
                out[i, a] = v // l
    return out


@njit(cache=True)
def _ranges(table):
    """Per tap (row of ``table``), the outputs [lo, hi) that read the input. Only meaningful
    without input dilation, where they are contiguous."""
    k, o = table.shape
    lo = np.zeros(k, dtype=np.int64)
    hi = np.zeros(k, dtype=np.int64)
    for i in range(k):
        a = 0
        while a < o and table[i, a] < 0:
            a += 1
        lo[i] = a
        b = a
        while b < o and table[i, b] >= 0:
            b += 1
        hi[i] = b
    return lo, hi


@njit(cache=True)
def _first_taps(k, d, s, pad, o):
    """:func:`reference.first_valid_taps` along one axis: ``max(0, −((a·s − pad) // d))``."""
    out = np.empty(o, dtype=np.int64)
    for a in range(o):
        t = -((a * s - pad) // d)  # floor division, Python's rule (numba keeps it)
        out[a] = t if t > 0 else 0
    return out


@njit(inline="always")
def _max_tap(xs, base, width, a, b, rtab, ctab, fr, fc, kh, kw, lowest, zero):
    """torch's max-pool rule over window (a, b) of the plane at ``xs[base:]``: (best value,
    winning tap)."""
    best = lowest
    win = fr[a] * kw + fc[b]
    for i in range(kh):
        r = rtab[i, a]
        if r == -1:
            continue
        for j in range(kw):
            q = ctab[j, b]
            if q == -1:
                continue  # −inf padding never wins
            if r >= 0 and q >= 0:
                v = xs[base + r * width + q]
            else:
                v = zero  # a zero the input dilation inserts
            if v > best or np.isnan(v):
                best = v
                win = i * kw + j
    return best, win


@njit(inline="always")
def _tap_pixel(k, a, b, kh, kw, rtab, ctab):
    """The input pixel (row, column) that tap ``k`` of window (a, b) reads, or (−1, −1) where it
    reads none (a tap out of range, the padding, a zero the input dilation inserts)."""
    if not 0 <= k < kh * kw:
        return -1, -1
    i = k // kw
    r = rtab[i, a]
    q = ctab[k - i * kw, b]
    if r < 0 or q < 0:
        return -1, -1
    return r, q


@njit(inline="always")
def _zero_plane(os, base, size):
    for t in range(size):
        os[base + t] = 0.0


@njit(inline="always")
def _add_rows(os, d, src, s, blo, bhi, sw):
    """``os[d + b·sw] += src[s + b]`` for b in [blo, bhi) (one tap's row of an adjoint). The
    indices are unsigned (every one is ≥ 0 here): numba then adds no negative-index wraparound,
    which keeps LLVM from vectorizing the loop; strides 1 and 2 are written in as constants, which
    LLVM vectorizes (a run-time stride stays scalar)."""
    if sw == 1:
        for b in range(blo, bhi):
            os[np.uint64(d + b)] += src[np.uint64(s + b)]
    elif sw == 2:
        for b in range(blo, bhi):
            os[np.uint64(d + b * 2)] += src[np.uint64(s + b)]
    else:
        for b in range(blo, bhi):
            os[np.uint64(d + b * sw)] += src[np.uint64(s + b)]


@njit(inline="always")
def _gather_row(os, d, xs, s, blo, bhi, sw):
    """``os[d + b] = xs[s + b·sw]`` for b in [blo, bhi) (one tap's row of im2col), the converse of
    :func:`_add_rows`, with its unsigned indices and constant strides."""
    if sw == 1:
        for b in range(blo, bhi):
            os[np.uint64(d + b)] = xs[np.uint64(s + b)]
    elif sw == 2:
        for b in range(blo, bhi):
            os[np.uint64(d + b)] = xs[np.uint64(s + b * 2)]
    else:
        for b in range(blo, bhi):
            os[np.uint64(d + b)] = xs[np.uint64(s + b * sw)]


# ---- im2col / col2im ---------------------------------------------------------------------------
# All kernels index flat views (``a.reshape(a.size)`` of C-contiguous arrays): one offset per
# row instead of 4-D index arithmetic per element (measured on 13-wide rows: docs/performance.md,
# "Measurements behind the design decisions").


@_kernel
def _im2col(x, kh, kw, sh, sw, dh, dw, top, left, oh, ow, lh, lw, out):
    n_, c_, h_, w_ = x.shape
    rtab = _table(kh, dh, sh, top, oh, h_, lh)
    ctab = _table(kw, dw, sw, left, ow, w_, lw)
    lo, hi = _ranges(ctab)
    taps = kh * kw
    plane = oh * ow
    xs = x.reshape(x.size)
    os = out.reshape(out.size)
    hw = h_ * w_
    for row in prange(c_ * taps):
        c = row // taps
        k = row - c * taps
        i = k // kw
        j = k - i * kw
        blo = lo[j]
        bhi = hi[j]
        u0 = j * dw - left
        for n in range(n_):
            xb = (n * c_ + c) * hw
            for a in range(oh):
                d = (row * n_ + n) * plane + a * ow
                r = rtab[i, a]
                if r < 0:
                    for b in range(ow):
                        os[d + b] = 0.0
                elif lw == 1:
                    src = xb + r * w_ + u0
                    for b in range(blo):
                        os[d + b] = 0.0
                    _gather_row(os, d, xs, src, blo, bhi, sw)
                    for b in range(bhi, ow):
                        os[d + b] = 0.0
                else:
                    src = xb + r * w_
                    for b in range(ow):
                        q = ctab[j, b]
                        if q >= 0:
                            os[d + b] = xs[src + q]
                        else:
                            os[d + b] = 0.0


@register("im2col", "numpy")
def im2col(x, w, xp):
    x = np.ascontiguousarray(x)
    n, c = x.shape[:2]
    out = np.empty((c * w.taps, n * w.oh * w.ow), dtype=x.dtype)
    _im2col(x, *_geometry(w), out)
    return out


@njit(inline="always")
def _spread(src, row_base, n_, c_, h_, w_, kh, kw, sw, dw, left, oh, ow, lw, rtab, ctab, lo, hi, os, p):
    """Plane ``p`` = (n, c) of an adjoint: zero it, then add tap by tap (each pixel sums its
    taps in tap order from 0.0). Tap k of output (a, b) is ``src[row_base(c, k, n) + a·ow + b]``."""
    n = p // c_
    c = p - n * c_
    hw = h_ * w_
    ob = p * hw
    _zero_plane(os, ob, hw)
    taps = kh * kw
    for i in range(kh):
        for j in range(kw):
            k = i * kw + j
            if row_base:  # col2im: (C·taps, N·oh·ow)
                sb = ((c * taps + k) * n_ + n) * oh * ow
            else:  # window_spread: (N, C, oh, ow), the same values for every tap
                sb = p * oh * ow
            u0 = j * dw - left
            for a in range(oh):
                r = rtab[i, a]
                if r < 0:
                    continue
                if lw == 1:
                    _add_rows(os, ob + r * w_ + u0, src, sb + a * ow, lo[j], hi[j], sw)
                else:
                    for b in range(ow):
                        q = ctab[j, b]
                        if q >= 0:
                            os[ob + r * w_ + q] += src[sb + a * ow + b]


@_kernel
def _adjoint(src, per_tap, kh, kw, sh, sw, dh, dw, top, left, oh, ow, lh, lw, out):
    """col2im (``per_tap``: ``src`` is the (C·taps, N·oh·ow) column matrix) or window_spread
    (``src`` is (N, C, oh, ow), the same values for every tap): see :func:`_spread`."""
    n_, c_, h_, w_ = out.shape
    rtab = _table(kh, dh, sh, top, oh, h_, lh)
    ctab = _table(kw, dw, sw, left, ow, w_, lw)
    lo, hi = _ranges(ctab)
    flat = src.reshape(src.size)
    os = out.reshape(out.size)
    for p in prange(n_ * c_):
        _spread(flat, per_tap, n_, c_, h_, w_, kh, kw, sw, dw, left, oh, ow, lw, rtab, ctab, lo, hi, os, p)


@register("col2im", "numpy")
def col2im(cols, shape, w, xp):
    cols = np.ascontiguousarray(cols)
    out = np.empty(tuple(shape), dtype=cols.dtype)
    _adjoint(cols, True, *_geometry(w), out)
    return out


# ---- max pooling -------------------------------------------------------------------------------


def _inside(k, d, s, pad, o, size, l):
    """Along one axis, the outputs [lo, hi) whose k taps all read the input (no padding, no
    zero inserted by an input dilation): ``a·s − pad ≥ 0`` and ``a·s − pad + (k−1)·d ≤ size − 1``.
    Pure-int geometry; empty with an input dilation."""
    if l != 1:
        return 0, 0
    lo = min(max(-(-pad // s), 0), o)  # ceil(pad / s)
    hi = min(max((size - 1 + pad - (k - 1) * d) // s + 1, lo), o)
    return lo, hi


def _interiors(x_shape, w):
    """(rows lo, rows hi, columns lo, columns hi) of the windows that lie inside the input."""
    return (*_inside(w.kh, w.dh, w.sh, w.top, w.oh, x_shape[-2], w.lh), *_inside(w.kw, w.dw, w.sw, w.left, w.ow, x_shape[-1], w.lw))


@njit(inline="always")
def _interior_columns(a, alo, ahi, blo, bhi, ow):
    """The output columns [lo, hi) of row ``a`` whose windows lie inside the input; (ow, ow), none,
    on a border row."""
    if alo <= a < ahi:
        return blo, bhi
    return ow, ow


@njit(inline="always")
def _window_max(xs, corner, width, kh, kw, dh, dw, lowest):
    """The window whose top-left tap reads ``xs[corner]``, all inside a plane ``width`` wide:
    (best, its tap), the first maximum in row-major order, NaN winning (the last NaN)."""
    best = lowest
    k = 0
    for i in range(kh):
        for j in range(kw):
            v = xs[np.uint64(corner + i * dh * width + j * dw)]
            take = (v > best) | (v != v)
            best = v if take else best
            k = i * kw + j if take else k
    return best, k


@njit(inline="always")
def _interior_windows(xs, bs, ts, want_taps, p0, p1, q0, h_, w_, kh, kw, sh, sw, dh, dw, top, left, oh, ow, alo, ahi, blo, bhi,
                      lowest):
    # The windows inside the input on planes p0:p1, the planes innermost: one window position
    # (a, b) on POOL_PLANES planes is a long loop of independent windows with one tap pattern, which
    # LLVM vectorizes, its selects becoming blends. Along a row (13 windows on seed-cnn's first
    # pooling) the loop is too short for that, and the scalar code x86 gets for a float select is
    # a branch, mispredicted on random data (docs/performance.md, "ninth session").
    # Plane p's outputs go to plane p − q0 of bs and ts.
    hw = h_ * w_
    for a in range(alo, ahi):
        for b in range(blo, bhi):
            corner = (a * sh - top) * w_ + b * sw - left
            slot = a * ow + b - q0 * oh * ow
            if want_taps:
                for p in range(p0, p1):
                    best, k = _window_max(xs, p * hw + corner, w_, kh, kw, dh, dw, lowest)
                    bs[np.uint64(p * oh * ow + slot)] = best
                    ts[np.uint64(p * oh * ow + slot)] = k
            else:
                for p in range(p0, p1):
                    best, _ = _window_max(xs, p * hw + corner, w_, kh, kw, dh, dw, lowest)
                    bs[np.uint64(p * oh * ow + slot)] = best


@njit(inline="always")
def _border_windows(xp, bp, tp, want_taps, kh, kw, oh, ow, alo, ahi, blo, bhi, tables, lowest, zero):
    # The windows of one plane that reach outside the input (padding, input dilation), through
    # the tap tables; they pick the tap _window_max would.
    rtab, ctab, fr, fc = tables
    xs = xp.reshape(xp.size)
    width = xp.shape[1]
    for a in range(oh):
        lo, hi = _interior_columns(a, alo, ahi, blo, bhi, ow)
        for b in range(ow):
            if b < lo or b >= hi:
                v, k = _max_tap(xs, 0, width, a, b, rtab, ctab, fr, fc, kh, kw, lowest, zero)
                bp[a, b] = v
                if want_taps:
                    tp[a, b] = k


@njit(inline="always")
def _block_maxima(x3, b3, t3, want_taps, p0, p1, q0, kh, kw, sh, sw, dh, dw, top, left, oh, ow, alo, ahi, blo, bhi, tables,
                  lowest, zero):
    """The windows' maxima (and, with ``want_taps``, their taps) of planes p0:p1 of ``x3`` into
    planes p − q0 of ``b3`` and ``t3`` (``t3``: one unused plane without taps): the windows inside
    the input across the planes, then each plane's border windows."""
    planes, h_, w_ = x3.shape
    _interior_windows(x3.reshape(x3.size), b3.reshape(b3.size), t3.reshape(t3.size), want_taps, p0, p1, q0, h_, w_, kh, kw, sh,
                      sw, dh, dw, top, left, oh, ow, alo, ahi, blo, bhi, lowest)
    t_step = 1 if want_taps else 0
    for p in range(p0, p1):
        _border_windows(x3[p], b3[p - q0], t3[(p - q0) * t_step], want_taps, kh, kw, oh, ow, alo, ahi, blo, bhi, tables, lowest, zero)


@njit(inline="always")
def _max_pool_scatter_plane(gp, tp, op, kh, kw, sh, sw, dh, dw, top, left, oh, ow, alo, ahi, blo, bhi, tables):
    # Windows in reverse row-major order: the windows covering one pixel then come in ascending
    # tap order (a later window reaches it with an earlier tap), the reference's summation order.
    # An interior window's tap k reaches the pixel (r0 + i·dh, q0 + j·dw), i, j = divmod(k, kw)
    # (a shift for the constant kw of a compiled window); a border window's goes through the tables.
    rtab, ctab, _, _ = tables
    os = op.reshape(op.size)
    width = op.shape[1]
    taps = kh * kw
    os[:] = 0
    for a in range(oh - 1, -1, -1):
        lo, hi = _interior_columns(a, alo, ahi, blo, bhi, ow)
        r0 = a * sh - top
        for b in range(ow - 1, -1, -1):
            k = tp[a, b]
            if lo <= b < hi:
                if 0 <= k < taps:  # a tap out of range reaches no pixel, as in the reference
                    i = k // kw
                    os[np.uint64((r0 + i * dh) * width + b * sw - left + (k - i * kw) * dw)] += gp[a, b]
            else:
                r, q = _tap_pixel(k, a, b, kh, kw, rtab, ctab)
                if r >= 0:
                    op[r, q] += gp[a, b]


@njit(inline="always")
def _pool_setup(x, kh, kw, sh, sw, dh, dw, top, left, oh, ow, lh, lw):
    """(the input as (N·C, H, W) planes, the tap tables (rows, columns, first taps of each),
    −inf and 0 in its dtype)."""
    n_, c_, h_, w_ = x.shape
    tables = (_table(kh, dh, sh, top, oh, h_, lh), _table(kw, dw, sw, left, ow, w_, lw),
              _first_taps(kh, dh, sh, top, oh), _first_taps(kw, dw, sw, left, ow))
    return x.reshape((n_ * c_, h_, w_)), tables, np.full(1, -np.inf, dtype=x.dtype)[0], np.zeros(1, dtype=x.dtype)[0]


def _max_pool_kernels(kh, kw, sh, sw, dh, dw):
    """The max-pool kernels (forward, backward, scatter) with these window sizes, strides and
    dilations either passed at run time (all None) or compiled in as constants, one set per
    geometry, so the tap loops unroll and the loops over windows vectorize (docs/performance.md).
    Each takes the geometry as arguments; the constants, where given, override the ones passed."""
    constant = kh is not None

    def forward(x, kh_, kw_, sh_, sw_, dh_, dw_, top, left, oh, ow, lh, lw, alo, ahi, blo, bhi, best, taps, want_taps):
        gkh, gkw, gsh, gsw, gdh, gdw = (kh, kw, sh, sw, dh, dw) if constant else (kh_, kw_, sh_, sw_, dh_, dw_)
        x3, tables, lowest, zero = _pool_setup(x, gkh, gkw, gsh, gsw, gdh, gdw, top, left, oh, ow, lh, lw)
        planes = x3.shape[0]
        b3 = best.reshape((planes, oh, ow))
        t3 = taps.reshape((taps.shape[0] * taps.shape[1], oh, ow))  # one plane, unused, unless want_taps
        for block in prange((planes + POOL_PLANES - 1) // POOL_PLANES):
            p0 = block * POOL_PLANES
            _block_maxima(x3, b3, t3, want_taps, p0, min(planes, p0 + POOL_PLANES), 0, gkh, gkw, gsh, gsw, gdh, gdw, top, left, oh,
                          ow, alo, ahi, blo, bhi, tables, lowest, zero)

    def backward(grad, x, kh_, kw_, sh_, sw_, dh_, dw_, top, left, oh, ow, lh, lw, alo, ahi, blo, bhi, out):
        # Per block of planes: its winners as the forward finds them, into the block's own
        # buffers (in cache), then their scatter, plane by plane.
        gkh, gkw, gsh, gsw, gdh, gdw = (kh, kw, sh, sw, dh, dw) if constant else (kh_, kw_, sh_, sw_, dh_, dw_)
        x3, tables, lowest, zero = _pool_setup(x, gkh, gkw, gsh, gsw, gdh, gdw, top, left, oh, ow, lh, lw)
        planes = x3.shape[0]
        g3 = grad.reshape((planes, oh, ow))
        o3 = out.reshape(x3.shape)
        for block in prange((planes + POOL_PLANES - 1) // POOL_PLANES):
            p0 = block * POOL_PLANES
            p1 = min(planes, p0 + POOL_PLANES)
            b3 = np.empty((p1 - p0, oh, ow), dtype=x.dtype)
            t3 = np.empty((p1 - p0, oh, ow), dtype=np.int32)
            _block_maxima(x3, b3, t3, True, p0, p1, p0, gkh, gkw, gsh, gsw, gdh, gdw, top, left, oh, ow, alo, ahi, blo, bhi, tables,
                          lowest, zero)
            for p in range(p0, p1):
                _max_pool_scatter_plane(g3[p], t3[p - p0], o3[p], gkh, gkw, gsh, gsw, gdh, gdw, top, left, oh, ow, alo, ahi, blo, bhi,
                                        tables)

    def scatter(grad, taps_in, kh_, kw_, sh_, sw_, dh_, dw_, top, left, oh, ow, lh, lw, alo, ahi, blo, bhi, out):
        gkh, gkw, gsh, gsw, gdh, gdw = (kh, kw, sh, sw, dh, dw) if constant else (kh_, kw_, sh_, sw_, dh_, dw_)
        o3, tables, _, _ = _pool_setup(out, gkh, gkw, gsh, gsw, gdh, gdw, top, left, oh, ow, lh, lw)
        g3 = grad.reshape((o3.shape[0], oh, ow))
        t3 = taps_in.reshape((o3.shape[0], oh, ow))
        for p in prange(o3.shape[0]):
            _max_pool_scatter_plane(g3[p], t3[p], o3[p], gkh, gkw, gsh, gsw, gdh, gdw, top, left, oh, ow, alo, ahi, blo, bhi, tables)

    return _kernel(forward), _kernel(backward), _kernel(scatter)


_GENERIC_MAX_POOL = _max_pool_kernels(None, None, None, None, None, None)


def _max_pool_set(w):
    """The (forward, backward, scatter) max-pool kernels for window ``w``: compiled for its geometry where
    :func:`dispatch.specialize_pool_window` says so, else the generic set."""
    if not specialize_pool_window(w.kh, w.kw, w.sh, w.sw, w.dh, w.dw, w.lh, w.lw):
        return _GENERIC_MAX_POOL
    return _specialized_max_pool(w.kh, w.kw, w.sh, w.sw, w.dh, w.dw)


@functools.cache
def _specialized_max_pool(kh, kw, sh, sw, dh, dw):
    return _max_pool_kernels(kh, kw, sh, sw, dh, dw)


@functools.lru_cache(maxsize=1024)
def _pool_launch(shape, w):
    """(whether the parallel builds run, the (forward, backward, scatter) builds for window ``w``,
    their geometry arguments) for an input of ``shape``, the largest array of each: the builds
    :class:`_Kernel` would pick, memoized per shape and window, as
    :func:`numba_conv._forward_plan` is."""
    parallel = math.prod(shape) >= PARALLEL_MIN_ELEMENTS
    builds = tuple(k.parallel if parallel else k.serial for k in _max_pool_set(w))
    return parallel, builds, (*_geometry(w), *_interiors(shape, w))


@register("max_pool", "numpy")
def max_pool(x, w, xp, *, taps=True):
    x = np.ascontiguousarray(x)
    shape = (*x.shape[:2], w.oh, w.ow)
    best = np.empty(shape, dtype=x.dtype)
    winner = np.empty(shape if taps else (1, 1, w.oh, w.ow), dtype=np.int32)
    parallel, builds, geometry = _pool_launch(x.shape, w)
    if parallel:
        _threads()
    builds[0](x, *geometry, best, winner, bool(taps))
    return best, (winner if taps else None)


@register("max_pool_backward", "numpy")
def max_pool_backward(grad, x, w, xp):
    x = np.ascontiguousarray(x)
    grad = np.ascontiguousarray(grad)
    out = np.empty(x.shape, dtype=grad.dtype)
    parallel, builds, geometry = _pool_launch(x.shape, w)
    if parallel:
        _threads()
    builds[1](grad, x, *geometry, out)
    return out


@register("max_pool_scatter", "numpy")
def max_pool_scatter(grad, taps, shape, w, xp):
    grad = np.ascontiguousarray(grad)
    taps = np.asarray(taps)
    index = np.int32 if taps.dtype == np.int32 else np.int64
    taps = np.ascontiguousarray(np.broadcast_to(taps, grad.shape), dtype=index)
    out = np.empty(tuple(shape), dtype=grad.dtype)
    parallel, builds, geometry = _pool_launch(tuple(shape), w)
    if parallel:
        _threads()
    builds[2](grad, taps, *geometry, out)
    return out


# ---- average pooling ---------------------------------------------------------------------------


@_kernel
def _window_sum(x, kh, kw, sh, sw, dh, dw, top, left, oh, ow, lh, lw, out):
    n_, c_, h_, w_ = x.shape
    rtab = _table(kh, dh, sh, top, oh, h_, lh)
    ctab = _table(kw, dw, sw, left, ow, w_, lw)
    zero = np.zeros(1, dtype=x.dtype)[0]
    xs = x.reshape(x.size)
    os = out.reshape(out.size)
    for p in prange(n_ * c_):
        xb = p * h_ * w_
        ob = p * oh * ow
        for a in range(oh):
            for b in range(ow):
                total = zero
                for i in range(kh):
                    r = rtab[i, a]
                    for j in range(kw):
                        q = ctab[j, b]
                        v = xs[xb + r * w_ + q] if (r >= 0 and q >= 0) else zero
                        if i == 0 and j == 0:
                            total = v  # tap0 + tap1 + ...: the first tap is not added to 0.0
                        else:
                            total += v
                os[ob + a * ow + b] = total


@register("window_sum", "numpy")
def window_sum(x, w, xp):
    x = np.ascontiguousarray(x)
    out = np.empty((*x.shape[:2], w.oh, w.ow), dtype=x.dtype)
    _window_sum(x, *_geometry(w), out)
    return out


@register("window_spread", "numpy")
def window_spread(grad, shape, w, xp):
    grad = np.ascontiguousarray(grad)
    out = np.empty(tuple(shape), dtype=grad.dtype)
    _adjoint(grad, False, *_geometry(w), out)
    return out


# ---- the product's result into NCHW ------------------------------------------------------------


@_kernel
def _to_nchw(y, bias, has_bias, out):
    n_, k_, plane = out.shape
    for p in prange(n_ * k_):
        n = p // k_
        k = p - n * k_
        base = n * plane
        if has_bias:
            add = bias[k]
            for t in range(plane):
                out[n, k, t] = y[k, base + t] + add
        else:
            for t in range(plane):
                out[n, k, t] = y[k, base + t]


@register("to_nchw", "numpy")
def to_nchw(y, bias, shape, xp):
    if bias is not None and np.asarray(bias).dtype != y.dtype:
        return reference.to_nchw(y, bias, shape, xp)  # NumPy's type promotion decides
    n, k, oh, ow = shape
    y = np.ascontiguousarray(y)
    out = np.empty((n, k, oh, ow), dtype=y.dtype)
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias) if has_bias else np.zeros(1, dtype=y.dtype)
    _to_nchw(y, bias, has_bias, out.reshape(n, k, oh * ow))
    return out


# ---- relu's gradient ----------------------------------------------------------------------------


@_kernel
def _relu(x, out):
    # A select, as in _relu_grad (the loop vectorizes): ``v < 0`` is False for NaN and for −0.0,
    # which are kept, as the reference and torch keep them.
    xs = x.reshape(x.size)
    os = out.reshape(out.size)
    zero = np.zeros(1, dtype=out.dtype)[0]
    for t in prange(os.size):
        v = xs[t]
        os[t] = zero if v < 0 else v


@register("relu", "numpy")
def relu(x, xp):
    if x.ndim == 0:
        return reference.relu(x, xp)
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, dtype=x.dtype)
    _relu(x, out)
    return out


@_kernel
def _relu_grad(grad, x, out):
    # A select, not a branch (random signs would mispredict every other branch; NumPy's where
    # branches): the loop vectorizes.
    gs = grad.reshape(grad.size)
    xs = x.reshape(x.size)
    os = out.reshape(out.size)
    zero = np.zeros(1, dtype=out.dtype)[0]
    for t in prange(os.size):
        os[t] = zero if xs[t] <= 0 else gs[t]


@register("relu_grad", "numpy")
def relu_grad(grad, x, xp):
    if grad.shape != x.shape or grad.ndim == 0:
        return reference.relu_grad(grad, x, xp)  # broadcasting (NumPy's rules decide), 0-d
    grad = np.ascontiguousarray(grad)
    x = np.ascontiguousarray(x)
    out = np.empty(grad.shape, dtype=grad.dtype)
    _relu_grad(grad, x, out)
    return out


# ---- log_softmax along one axis -------------------------------------------------------------------


@njit(inline="always")
def _log_sum_exp(xs, base, n, inner):
    """(m, log Σ exp(x − m)) of the slice ``xs[base + j·inner]``, j < n, m its maximum (NaN if
    it holds one, as the reference's max); the sum in float64."""
    m = xs[base]
    for j in range(1, n):
        v = xs[base + j * inner]
        if v > m or v != v:
            m = v
    total = 0.0
    for j in range(n):
        total += np.exp(np.float64(xs[base + j * inner] - m))
    return m, np.log(total)


@_kernel
def _log_softmax(x, outer, n, inner, out):
    # x as (outer, n, inner): one slice along the axis per iteration; x − m in the array's dtype
    # (the reference's shifted values), the log-sum in float64, rounded once when stored.
    xs = x.reshape(x.size)
    os = out.reshape(out.size)
    for q in prange(outer * inner):
        base = (q // inner) * n * inner + q % inner
        m, lse = _log_sum_exp(xs, base, n, inner)
        for j in range(n):
            p = base + j * inner
            os[p] = (xs[p] - m) - lse


@_kernel
def _log_softmax_backward(grad, x, outer, n, inner, out):
    # grad − exp(log_softmax(x)) · Σ grad, per slice; the sum of grad in float64.
    gs = grad.reshape(grad.size)
    xs = x.reshape(x.size)
    os = out.reshape(out.size)
    for q in prange(outer * inner):
        base = (q // inner) * n * inner + q % inner
        m, lse = _log_sum_exp(xs, base, n, inner)
        total = 0.0
        for j in range(n):
            total += gs[base + j * inner]
        for j in range(n):
            p = base + j * inner
            os[p] = gs[p] - np.exp((xs[p] - m) - lse) * total


def _slices(shape, axis):
    """(outer, n, inner): an array of ``shape`` seen as slices of n entries along ``axis``."""
    axis = axis % len(shape)
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


@register("log_softmax", "numpy")
def log_softmax(x, axis, xp):
    if x.ndim == 0 or x.size == 0:
        return reference.log_softmax(x, axis, xp)
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, dtype=x.dtype)
    _log_softmax(x, *_slices(x.shape, axis), out)
    return out


@register("log_softmax_backward", "numpy")
def log_softmax_backward(grad, x, axis, xp):
    if x.ndim == 0 or x.size == 0 or grad.shape != x.shape or grad.dtype != x.dtype:
        return reference.log_softmax_backward(grad, x, axis, xp)
    grad = np.ascontiguousarray(grad)
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, dtype=x.dtype)
    _log_softmax_backward(grad, x, *_slices(x.shape, axis), out)
    return out


# ---- a convolution's bias gradient ---------------------------------------------------------------


@functools.partial(_kernel, fastmath={"reassoc"})
def _channel_sum(grad, out):
    # Per channel, one float64 sum over the planes, rounded once: at least as accurate as NumPy's
    # pairwise sum. Reassociation (only: NaN, inf and signed zeros keep IEEE's rules) lets LLVM
    # split it into vector lanes; which lanes is the build's choice, so the serial and parallel
    # builds may round a float64 sum differently in its last bit. From +0.0, as NumPy's sum.
    n_, c_, h_, w_ = grad.shape
    plane = h_ * w_
    gs = grad.reshape(grad.size)
    for k in prange(c_):
        total = 0.0
        for n in range(n_):
            base = (n * c_ + k) * plane
            for p in range(base, base + plane):
                total += gs[np.uint64(p)]
        out[k] = total


@register("channel_sum", "numpy")
def channel_sum(grad, xp):
    grad = np.ascontiguousarray(grad)
    out = np.empty(grad.shape[1], dtype=grad.dtype)
    _channel_sum(grad, out)
    return out


from . import numba_conv, numba_winograd, numpy_products  # noqa: E402,F401  (register the fused convolutions, the Winograd kernels, the products)
