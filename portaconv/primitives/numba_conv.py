"""The NumPy family's convolution kernels: im2col and the products in one pass, block by block.

:func:`~portaconv.primitives.reference.conv_im2col` (and its backward) compose im2col, the matrix
products and to_nchw (col2im) over whole column matrices: the column matrix (C·kh·kw × N·oh·ow,
often larger than the input by the kernel's area) is written to memory, read back by the product,
and the product's (K, N·oh·ow) result is copied once more into NCHW. Here each of numba's threads
takes one block at a time (output rows of one image, or several whole images where an image is
small: :func:`~portaconv.primitives.dispatch.conv_blocks`), writes the block's columns into a
buffer of its own small enough to stay in the core's L2 cache, and hands it to NumPy's BLAS
(``cblas_?gemm`` through the pointer :mod:`~portaconv.primitives.numpy_products` finds), which
reads it from the cache. A block of one image's rows is written straight into the NCHW result (a
leading dimension of oh·ow does it: the rows of one image's output channels are oh·ow apart); a
block of several images goes through a (K, images·oh·ow) buffer, so that BLAS gets one product
wide enough to run at full speed rather than one per small image.

* Forward: ``out[n, k, block] = W_g (K/G × C/G·kh·kw) @ columns(block)`` per group g, then the
  bias. Each output is one BLAS dot product over the same C·kh·kw terms as in the whole product;
  mostly the reference's bits, but BLAS may round a block's product differently from the whole
  one's (OpenBLAS's small-matrix kernels do, in float64).
* Backward (a thread owns whole images, so the col2im adds do not race; a block of several images
  first gathers their gradients into one (K, images·oh·ow) matrix): ``W_gᵀ @ grad[block]``
  (C/G·kh·kw × block) is added back into the images' input gradient (col2im, each tap's rows in
  tap order), and each thread sums ``grad[block] @ columns(block)ᵀ`` into its own copy of the
  weight gradient (BLAS with beta = 1), the copies added in thread order. A pixel's taps from
  different blocks, and the weight gradient's sum over pixels, are added in another order than
  the reference's.

Hence equal to the reference within the dtype's rounding, not bit for bit (tested that way, and
bit for bit on sums that are exact in any order, which checks the indexing and NaN/inf).

Geometry as in :mod:`~portaconv.primitives.numba_kernels` (the same tap tables). The common case,
stride 1 with an output no wider than the input and no input dilation ("same" and "valid"
padding), lays the columns out in rows as wide as the input (:func:`_runs`): then one tap's
columns are the input plane read from one offset, copied (and added back) as one contiguous run,
the padding columns mended after. The entries past an output row's ow are no outputs: the
forward drops their products (the block's product goes through a buffer), the backward gives
them zero gradients, and zeros them in the columns where an inf or NaN in the input (weight)
would turn those zeros into NaN. The wider rows cost the product (w − ow)/ow more work; the
row-by-row copy they replace cost more (docs/performance.md). The rest goes row by row.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba import njit, prange

from .._options import get_options
from . import reference
from .cblas import cblas_gemm
from .dispatch import PARALLEL_MIN_ELEMENTS, conv_blocks, register, wide_rows
from .numba_kernels import _Kernel, _add_rows, _gather_row, _geometry, _ranges, _table, _threads
from . import numpy_products  # (imported in either order with numba_kernels: attributes read at call time)

__all__ = ["conv_im2col", "conv_im2col_backward"]

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _runs(w, width) -> bool:
    """Whether one tap's rows of a block's columns are one contiguous run of the input plane: stride
    1, no input dilation, and an output no wider than the input, and not much narrower
    (:func:`~portaconv.primitives.dispatch.wide_rows`). Then the columns are laid out "wide",
    ``width`` entries per output row (the input's row length), so that output (a, b) and (a, b + 1)
    read neighbouring input pixels and output (a + 1, 0) reads the pixel ``width`` after (a, 0): a
    tap's columns are the input plane read from one offset. Entries ``b >= ow`` of a row are not
    outputs: their products are dropped, their gradients are zeros."""
    return (w.sh, w.sw, w.lh, w.lw) == (1, 1, 1, 1) and wide_rows(w.ow, width)


@njit(inline="always")
def _column_row(row, taps, kw, dw, left, lo, hi, image, hw, pb, col0, a0, cw):
    """Row (c, i, j) of a block's columns: (i, j, the output columns [blo, bhi) whose tap reads the
    input, u0 = ``j·dw − left`` (output column b reads input column ``b·sw + u0``), the index of
    channel c's plane in the image at ``image``, and rb: ``rb + a·cw + b`` is output (a, b)'s entry,
    cw being the columns' entries per output row)."""
    c = row // taps
    k = row - c * taps
    i = k // kw
    j = k - i * kw
    return i, j, lo[j], hi[j], j * dw - left, image + c * hw, row * pb + col0 - a0 * cw


@njit(inline="always")
def _run_rows(i, a0, a1, rlo, rhi):
    """The output rows [alo, ahi) of a0:a1 whose tap row i reads the input (alo = ahi = a1: none)."""
    alo = max(a0, rlo[i])
    ahi = min(a1, rhi[i])
    if alo >= ahi:
        return a1, a1
    return alo, ahi


@njit(cache=True, nogil=True)
def _all_finite(xs, start, stop):
    """Whether ``xs[start:stop]`` holds no inf or NaN (``v − v`` is 0 for finite v, NaN else)."""
    total = xs[start] - xs[start]
    for p in range(start, stop):
        total += xs[np.uint64(p)] - xs[np.uint64(p)]
    return total == 0


@njit(cache=True, nogil=True)
def _fill_columns(xs, xb, c_, h_, w_, kh, kw, sw, dw, left, a0, a1, ow, lw, rtab, ctab, lo, hi, rlo, rhi, run, finite, buf, pb,
                  col0):
    """``buf[(c, i, j)·pb + col0 + (a − a0)·cw + b]`` = im2col's entry for output rows a0:a1 of the
    image at ``xs[xb:]`` (zero on the padding), cw = ``w_`` where ``run`` (:func:`_runs`), else ow.
    The entries ``b >= ow`` of the wide layout are input pixels, zeros unless ``finite`` (the image
    holds no inf or NaN, which a gradient's zero there would turn into NaN)."""
    taps = kh * kw
    hw = h_ * w_
    cw = w_ if run else ow
    for row in range(c_ * taps):
        i, j, blo, bhi, u0, base, rb = _column_row(row, taps, kw, dw, left, lo, hi, xb, hw, pb, col0, a0, cw)
        if run:
            alo, ahi = _run_rows(i, a0, a1, rlo, rhi)
            if alo < ahi:
                shift = base + rtab[i, alo] * w_ - alo * cw + u0 - rb  # input index − buf index
                for d in range(rb + alo * cw + blo, rb + (ahi - 1) * cw + bhi):
                    buf[np.uint64(d)] = xs[np.uint64(d + shift)]
            for a in range(a0, alo):
                for b in range(cw):
                    buf[rb + a * cw + b] = 0.0
            for a in range(ahi, a1):
                for b in range(cw):
                    buf[rb + a * cw + b] = 0.0
            # The run copied the neighbouring rows' pixels into the padding columns (and, where
            # not ``finite``, possibly a non-finite pixel into the columns past ow); the last row's
            # entries past bhi it did not write.
            mend = blo > 0 or bhi < ow or (not finite and cw > ow)
            for a in range(alo if mend else max(alo, ahi - 1), ahi):
                d = rb + a * cw
                for b in range(blo):
                    buf[d + b] = 0.0
                for b in range(bhi, cw if a == ahi - 1 or not finite else ow):
                    buf[d + b] = 0.0
        else:
            for a in range(a0, a1):
                d = rb + a * ow
                r = rtab[i, a]
                if r < 0:
                    for b in range(ow):
                        buf[d + b] = 0.0
                elif lw == 1:
                    src = base + r * w_ + u0
                    for b in range(blo):
                        buf[d + b] = 0.0
                    _gather_row(buf, d, xs, src, blo, bhi, sw)
                    for b in range(bhi, ow):
                        buf[d + b] = 0.0
                else:
                    src = base + r * w_
                    for b in range(ow):
                        q = ctab[j, b]
                        buf[d + b] = xs[src + q] if q >= 0 else 0.0


@njit(cache=True, nogil=True)
def _add_columns(buf, pb, col0, gs, gb, c_, h_, w_, kh, kw, sw, dw, left, a0, a1, ow, lw, rtab, ctab, lo, hi, rlo, rhi, run,
                 finite):
    """col2im of a block: add ``buf`` (laid out as :func:`_fill_columns` fills it) back into the
    image's input gradient at ``gs[gb:]``, tap by tap. ``buf``'s padding entries are overwritten;
    its entries past ow (the products of the gradient's zeros there) too unless ``finite`` (the
    weight holds no inf or NaN: then they are zeros)."""
    taps = kh * kw
    hw = h_ * w_
    cw = w_ if run else ow
    for row in range(c_ * taps):
        i, j, blo, bhi, u0, base, rb = _column_row(row, taps, kw, dw, left, lo, hi, gb, hw, pb, col0, a0, cw)
        if run:
            alo, ahi = _run_rows(i, a0, a1, rlo, rhi)
            if alo < ahi:
                # Zeros where the run crosses the padding columns: the pixels of the neighbouring
                # rows they land on get + 0.0, which changes no sum (sums start at +0.0, so none
                # is −0.0).
                if blo > 0 or bhi < ow or (not finite and cw > ow):
                    for a in range(alo, ahi):
                        for b in range(blo):
                            buf[rb + a * cw + b] = 0.0
                        for b in range(bhi, cw):
                            buf[rb + a * cw + b] = 0.0
                shift = base + rtab[i, alo] * w_ - alo * cw + u0 - rb
                for d in range(rb + alo * cw + blo, rb + (ahi - 1) * cw + bhi):
                    gs[np.uint64(d + shift)] += buf[np.uint64(d)]
        else:
            for a in range(a0, a1):
                r = rtab[i, a]
                if r < 0:
                    continue
                d = rb + a * ow
                if lw == 1:
                    _add_rows(gs, base + r * w_ + u0, buf, d, blo, bhi, sw)
                else:
                    for b in range(ow):
                        q = ctab[j, b]
                        if q >= 0:
                            gs[base + r * w_ + q] += buf[d + b]


@njit(inline="always")
def _blocks(n_, oh, ow, images, block_rows, item):
    """Block ``item``'s images n0:n1 and output rows a0:a1 (images > 1: whole images)."""
    row_blocks = (oh + block_rows - 1) // block_rows
    ib = item // row_blocks
    n0 = ib * images
    a0 = (item - ib * row_blocks) * block_rows
    return n0, min(n_, n0 + images), a0, min(oh, a0 + block_rows)


def _conv_forward(gemm, x, wmat, bias, has_bias, groups, kh, kw, sh, sw, dh, dw, top, left, oh, ow, lh, lw, run, images,
                  block_rows, threads, one, zero, out):
    n_, c_, h_, w_ = x.shape
    k_ = wmat.shape[0]
    kg = k_ // groups
    taps = kh * kw
    ckk_g = (c_ // groups) * taps
    rtab = _table(kh, dh, sh, top, oh, h_, lh)
    ctab = _table(kw, dw, sw, left, ow, w_, lw)
    lo, hi = _ranges(ctab)
    rlo, rhi = _ranges(rtab)
    cw = w_ if run else ow  # the columns' entries per output row
    items = ((n_ + images - 1) // images) * ((oh + block_rows - 1) // block_rows)
    plane = oh * ow
    chw = c_ * h_ * w_
    xs = x.reshape(x.size)
    os = out.reshape(out.size)
    width = images * block_rows * cw  # a block's columns, at most
    size = c_ * taps * width
    bufs = np.empty(threads * size, dtype=x.dtype)
    # Several (small) images per block, or wide rows: the product goes to a buffer, then into NCHW.
    gathered = images > 1 or cw > ow
    products = np.empty(threads * k_ * width if gathered else 0, dtype=x.dtype)
    itemsize = x.itemsize
    for t in prange(threads):
        buf = bufs[t * size:(t + 1) * size]
        yb = t * k_ * width
        for item in range(t, items, threads):
            n0, n1, a0, a1 = _blocks(n_, oh, ow, images, block_rows, item)
            rows = (a1 - a0) * cw
            pb = (n1 - n0) * rows
            for n in range(n0, n1):
                # (finite: the products of the columns past ow are dropped, whatever they hold)
                _fill_columns(xs, n * chw, c_, h_, w_, kh, kw, sw, dw, left, a0, a1, ow, lw, rtab, ctab, lo, hi, rlo, rhi,
                              run, True, buf, pb, (n - n0) * rows)
            if gathered:
                for g in range(groups):
                    cblas_gemm(gemm, _ROW_MAJOR, _NO_TRANS, _NO_TRANS, kg, pb, ckk_g, one,
                               wmat.ctypes.data + g * kg * ckk_g * itemsize, ckk_g, buf.ctypes.data + g * ckk_g * pb * itemsize,
                               pb, zero, products.ctypes.data + (yb + g * kg * pb) * itemsize, pb)
                for n in range(n0, n1):
                    for k in range(k_):
                        for a in range(a1 - a0):
                            src = yb + k * pb + (n - n0) * rows + a * cw
                            dst = (n * k_ + k) * plane + (a0 + a) * ow
                            if has_bias:  # the reference's product + bias (adding no zero: −0.0 stays)
                                value = bias[k]
                                for b in range(ow):
                                    os[np.uint64(dst + b)] = products[np.uint64(src + b)] + value
                            else:
                                for b in range(ow):
                                    os[np.uint64(dst + b)] = products[np.uint64(src + b)]
            else:
                ob = n0 * k_ * plane + a0 * ow
                for g in range(groups):
                    cblas_gemm(gemm, _ROW_MAJOR, _NO_TRANS, _NO_TRANS, kg, pb, ckk_g, one,
                               wmat.ctypes.data + g * kg * ckk_g * itemsize, ckk_g, buf.ctypes.data + g * ckk_g * pb * itemsize,
                               pb, zero, out.ctypes.data + (ob + g * kg * plane) * itemsize, plane)
                if has_bias:
                    for k in range(k_):
                        value = bias[k]
                        start = ob + k * plane
                        for p in range(pb):
                            os[np.uint64(start + p)] += value


def _conv_backward(gemm, grad, x, wmat, groups, c_, h_, w_, kh, kw, sh, sw, dh, dw, top, left, oh, ow, lh, lw, run, images,
                   block_rows, threads, one, zero, input_grad, weight_grad, grad_input, weight_parts):
    n_, k_ = grad.shape[:2]
    kg = k_ // groups
    taps = kh * kw
    ckk_g = (c_ // groups) * taps
    rtab = _table(kh, dh, sh, top, oh, h_, lh)
    ctab = _table(kw, dw, sw, left, ow, w_, lw)
    lo, hi = _ranges(ctab)
    rlo, rhi = _ranges(rtab)
    cw = w_ if run else ow  # the columns' entries per output row
    row_blocks = (oh + block_rows - 1) // block_rows
    image_blocks = (n_ + images - 1) // images
    plane = oh * ow
    hw = h_ * w_
    xs = x.reshape(x.size)
    gs = grad_input.reshape(grad_input.size)
    grads = grad.reshape(grad.size)
    width = images * block_rows * cw
    size = c_ * taps * width
    bufs = np.empty(threads * size, dtype=grad.dtype)
    # Several (small) images per block, or wide rows: the gradients are gathered into one
    # (K, images·rows·cw) matrix, zeros past ow.
    gathered = images > 1 or cw > ow
    gathers = np.empty(threads * k_ * width if gathered else 0, dtype=grad.dtype)
    itemsize = grad.itemsize
    part = kg * ckk_g * groups
    # Without inf or NaN in the weight, the input gradient's columns past ow are zeros (the
    # gradient's zeros there times the weight), which the col2im adds may add as they are.
    weight_finite = not input_grad or _all_finite(wmat.reshape(wmat.size), 0, wmat.size)
    for t in prange(threads):
        buf = bufs[t * size:(t + 1) * size]
        for ib in range(t, image_blocks, threads):  # a thread owns whole images: its col2im adds do not race
            n0 = ib * images
            n1 = min(n_, n0 + images)
            if input_grad:
                for p in range(n0 * c_ * hw, n1 * c_ * hw):
                    gs[p] = 0.0
            for block in range(row_blocks):
                a0 = block * block_rows
                a1 = min(oh, a0 + block_rows)
                rows = (a1 - a0) * cw
                pb = (n1 - n0) * rows
                if gathered:
                    gb = t * k_ * width
                    for n in range(n0, n1):
                        for k in range(k_):
                            for a in range(a1 - a0):
                                src = (n * k_ + k) * plane + (a0 + a) * ow
                                dst = gb + k * pb + (n - n0) * rows + a * cw
                                for b in range(ow):
                                    gathers[np.uint64(dst + b)] = grads[np.uint64(src + b)]
                                for b in range(ow, cw):
                                    gathers[np.uint64(dst + b)] = 0.0
                    gp = gathers.ctypes.data + gb * itemsize  # (K, pb)
                    ld = pb
                else:
                    gp = grad.ctypes.data + (n0 * k_ * plane + a0 * ow) * itemsize  # grad[n0, :, a0:a1] (ld oh·ow)
                    ld = plane
                if weight_grad:
                    for n in range(n0, n1):
                        finite = cw == ow or _all_finite(xs, n * c_ * hw, (n + 1) * c_ * hw)
                        _fill_columns(xs, n * c_ * hw, c_, h_, w_, kh, kw, sw, dw, left, a0, a1, ow, lw, rtab, ctab, lo, hi,
                                      rlo, rhi, run, finite, buf, pb, (n - n0) * rows)
                    for g in range(groups):
                        cblas_gemm(gemm, _ROW_MAJOR, _NO_TRANS, _TRANS, kg, ckk_g, pb, one, gp + g * kg * ld * itemsize, ld,
                                   buf.ctypes.data + g * ckk_g * pb * itemsize, pb, one,
                                   weight_parts.ctypes.data + (t * part + g * kg * ckk_g) * itemsize, ckk_g)
                if input_grad:
                    for g in range(groups):
                        cblas_gemm(gemm, _ROW_MAJOR, _TRANS, _NO_TRANS, ckk_g, pb, kg, one,
                                   wmat.ctypes.data + g * kg * ckk_g * itemsize, ckk_g, gp + g * kg * ld * itemsize, ld, zero,
                                   buf.ctypes.data + g * ckk_g * pb * itemsize, pb)
                    for n in range(n0, n1):
                        _add_columns(buf, pb, (n - n0) * rows, gs, n * c_ * hw, c_, h_, w_, kh, kw, sw, dw, left, a0, a1, ow,
                                     lw, rtab, ctab, lo, hi, rlo, rhi, run, weight_finite)


# Each compiled twice, parallel and serial (under their own names: numba's disk cache keys on the name).
_forward_kernels = _Kernel(_conv_forward)
_backward_kernels = _Kernel(_conv_backward)


@functools.lru_cache(maxsize=1024)
def _plan(kernels, largest, channels, out_channels, w, row_width, batch, itemsize, workspace_limit, num_threads):
    """(kernel, threads, images per block, output rows per block, whether BLAS runs on one
    thread): the parallel build on numba's threads when the largest array is worth it (as
    :class:`~portaconv.primitives.numba_kernels._Kernel`), else the serial one; blocks as
    :func:`~portaconv.primitives.dispatch.conv_blocks` sizes them for an output row's columns and
    products, ``row_width`` entries each. With several of numba's threads BLAS runs on one (each
    of them calls it: BLAS's own threads would oversubscribe the cores); the serial kernel leaves
    BLAS its threads, which then share its products (a batch of one image), unless
    ``options(num_threads=...)`` limits the threads. Memoized per geometry and the options it
    reads (``workspace_limit`` and ``num_threads``, in the key)."""
    threads = 1
    if largest >= PARALLEL_MIN_ELEMENTS:
        _threads()
        threads = numba.get_num_threads()
    bytes_per_row = (channels * w.taps + out_channels) * row_width * itemsize
    images, block_rows = conv_blocks(bytes_per_row, w.oh, batch, threads)
    kernel = kernels.serial if threads == 1 else kernels.parallel
    return kernel, threads, images, block_rows, threads > 1 or num_threads is not None


def _run(kernel, threads, one_blas_thread, *args):
    if threads > 1:
        _threads()  # numba's thread count is per calling thread: set it on every launch
    if one_blas_thread:
        with numpy_products._OneBlasThread():
            kernel(*args)
    else:
        kernel(*args)


_ONE_ZERO = {np.dtype(np.float32): (np.float32(1), np.float32(0)), np.dtype(np.float64): (np.float64(1), np.float64(0))}


def _gemm(dtype, dtypes, sizes):
    """NumPy's BLAS ?gemm for ``dtype`` where the fused kernels run: the BLAS found, every other
    array (None: absent) of ``dtype``, nothing empty; else None (the reference runs)."""
    gemm = numpy_products._gemms().get(dtype)
    if gemm is None or 0 in sizes or any(d is not None and d != dtype for d in dtypes):
        return None
    return gemm


@functools.lru_cache(maxsize=1024)
def _forward_plan(shape, out_channels, dtype, weight_dtype, bias_dtype, w, workspace_limit, num_threads):
    """The forward kernel's launch for an input of ``shape`` (see :func:`_plan`): (kernel, threads,
    whether BLAS runs on one thread, BLAS's gemm, the kernel's geometry arguments), or None where
    the fused kernel does not run (:func:`_gemm`); memoized per call geometry, dtypes and options
    (docs/performance.md, "seventh session")."""
    n_, c_, h_, width = shape
    gemm = _gemm(dtype, (weight_dtype, bias_dtype), (n_, c_, out_channels, w.oh * w.ow))
    if gemm is None:
        return None
    run = _runs(w, width)
    largest = max(n_ * c_ * h_ * width, n_ * out_channels * w.oh * w.ow)
    kernel, threads, images, block_rows, one_blas_thread = _plan(
        _forward_kernels, largest, c_, out_channels, w, width if run else w.ow, n_, dtype.itemsize, workspace_limit, num_threads
    )
    return kernel, threads, one_blas_thread, gemm, (*_geometry(w), run, images, block_rows, threads, *_ONE_ZERO[dtype])


@functools.lru_cache(maxsize=1024)
def _backward_plan(shape, out_channels, dtype, x_dtype, weight_dtype, w, workspace_limit, num_threads):
    """The backward kernel's launch, as :func:`_forward_plan` (``x_dtype``, ``weight_dtype``: None
    where that operand is not read); a thread owns whole blocks of images."""
    n_, c_, h_, w_ = shape
    gemm = _gemm(dtype, (x_dtype, weight_dtype), (n_ * c_ * h_ * w_, out_channels, w.oh * w.ow))
    if gemm is None:
        return None
    run = _runs(w, w_)
    largest = max(n_ * out_channels * w.oh * w.ow, n_ * c_ * h_ * w_)
    kernel, threads, images, block_rows, one_blas_thread = _plan(
        _backward_kernels, largest, c_, out_channels, w, w_ if run else w.ow, n_, dtype.itemsize, workspace_limit, num_threads
    )
    threads = max(1, min(threads, -(-n_ // images)))
    geometry = (c_, h_, w_, *_geometry(w), run, images, block_rows, threads, *_ONE_ZERO[dtype])
    return kernel, threads, one_blas_thread, gemm, geometry


@register("conv_im2col", "numpy")
def conv_im2col(x, weight, bias, w, groups, xp, *, keep=False):
    """:func:`reference.conv_im2col` fused (see the module docstring); keeps no columns."""
    out_channels = weight.shape[0]
    options = get_options()
    plan = _forward_plan(x.shape, out_channels, x.dtype, weight.dtype, None if bias is None else bias.dtype, w,
                         options.workspace_limit, options.num_threads)
    if plan is None:
        return reference.conv_im2col(x, weight, bias, w, groups, xp, keep=keep)
    kernel, threads, one_blas_thread, gemm, geometry = plan
    x = np.ascontiguousarray(x)
    wmat = np.ascontiguousarray(weight.reshape(out_channels, -1))
    out = np.empty((x.shape[0], out_channels, w.oh, w.ow), dtype=x.dtype)
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias) if has_bias else wmat[0]  # (a placeholder of the same type)
    _run(kernel, threads, one_blas_thread, gemm, x, wmat, bias, has_bias, groups, *geometry, out)
    return out, None


@register("conv_im2col_backward", "numpy")
def conv_im2col_backward(grad, x, weight, w, groups, input_shape, xp, *, input_grad=True, weight_grad=True, columns=None):
    """:func:`reference.conv_im2col_backward` fused (see the module docstring); kept ``columns``
    (only the composed route keeps any) go to the reference."""
    dtype = grad.dtype
    n_, c_, h_, w_ = (int(s) for s in input_shape)
    out_channels = grad.shape[1]
    options = get_options()
    plan = None if columns is not None else _backward_plan(
        (n_, c_, h_, w_), out_channels, dtype, x.dtype if weight_grad else None, weight.dtype if input_grad else None, w,
        options.workspace_limit, options.num_threads,
    )
    if plan is None:
        return reference.conv_im2col_backward(grad, x, weight, w, groups, input_shape, xp, input_grad=input_grad,
                                              weight_grad=weight_grad, columns=columns)
    kernel, threads, one_blas_thread, gemm, geometry = plan
    grad = np.ascontiguousarray(grad)
    ckk_g = c_ // groups * w.taps
    wmat = np.ascontiguousarray(weight.reshape(out_channels, -1)) if input_grad else np.empty((1, 1), dtype)
    xc = np.ascontiguousarray(x) if weight_grad else np.empty((1, 1, 1, 1), dtype)
    grad_input = np.empty((n_, c_, h_, w_), dtype) if input_grad else np.empty((1, 1, 1, 1), dtype)
    parts = np.zeros((threads if weight_grad else 1, out_channels, ckk_g), dtype)
    _run(kernel, threads, one_blas_thread, gemm, grad, xc, wmat, groups, *geometry, input_grad,
         weight_grad, grad_input, parts)
    grad_weight = None
    if weight_grad:
        total = parts[0]
        for t in range(1, threads):
            total = total + parts[t]
        grad_weight = np.reshape(total, (out_channels, c_ // groups, w.kh, w.kw))
    return (grad_input if input_grad else None), grad_weight
