"""CuPy raw kernels for the im2col and col2im primitives (registered for the "cupy" family).

The reference builds a column matrix from ``kh·kw`` slice copies of an input that was first
padded (and, for the stride0 backward, dilated) by another copy, and scatter-adds columns back tap
by tap. On a GPU each of those is a launch and a pass over device memory (docs/performance.md has the
H100 measurements). Here each is one launch:

* :func:`im2col` reads a (C, N, H, W) view of any strides as if it were padded by ``pads`` and
  dilated by ``lhs`` (zeros inserted between its pixels: the stride0 of the input gradient), and
  writes the (C·kh·kw, N·oh·ow) column matrix;
* :func:`col2im` writes each input pixel's sum over the taps that read it, straight into the
  unpadded (N, C, H, W) memory: no zero buffer, no scatter, no crop. It sums the taps in the order
  the generic scatter-add does, so both give the same bits.
"""

from __future__ import annotations

import functools

import numpy as np

from .dispatch import register
from .reference import col2im as _reference_col2im

_SOURCE = r"""
// One thread per input position of the columns, (c, n, a, b) with b fastest: it writes that
// position's kh·kw taps, so the index arithmetic (divisions are slow on a GPU) is paid once per
// kh·kw elements, and the writes of neighbouring threads are neighbours in every tap's row. I is
// int when every index fits 31 bits, else long long.
template <typename T, typename I>
__global__ void im2col(const T* x, T* cols, I total, I batch, I height, I width,
                       long long s_c, long long s_n, long long s_h, long long s_w,
                       I kh, I kw, I sh, I sw, I dh, I dw, I top, I left, I lh, I lw, I oh, I ow) {
    I positions = batch * oh * ow;
    for (I index = blockIdx.x * (I)blockDim.x + threadIdx.x; index < total; index += (I)blockDim.x * gridDim.x) {
        I b = index % ow, rest = index / ow;
        I a = rest % oh;
        rest /= oh;
        I n = rest % batch, c = rest / batch;
        const T* image = x + c * s_c + n * s_n;
        T* target = cols + (long long)c * kh * kw * positions + (n * oh + a) * ow + b;
        for (I i = 0; i < kh; ++i) {
            // Row in the dilated, unpadded input: padding if negative, past the end or between
            // two dilated rows.
            I y = a * sh + i * dh - top;
            bool row_in = y >= 0;
            if (lh > 1) {
                row_in = row_in && y % lh == 0;
                y /= lh;
            }
            row_in = row_in && y < height;
            for (I j = 0; j < kw; ++j) {
                I x_ = b * sw + j * dw - left;
                bool in = row_in && x_ >= 0;
                if (lw > 1) {
                    in = in && x_ % lw == 0;
                    x_ /= lw;
                }
                in = in && x_ < width;
                *target = in ? image[y * s_h + x_ * s_w] : T(0);
                target += positions;
            }
        }
    }
}

// One thread per pixel of the unpadded (N, C, H, W) result: the sum of the column entries of
// every tap that read it, in tap order.
template <typename T, typename I>
__global__ void col2im(const T* cols, T* out, I total, I channels, I batch, I height, I width,
                       I kh, I kw, I sh, I sw, I dh, I dw, I top, I left, I oh, I ow) {
    I positions = batch * oh * ow;
    for (I index = blockIdx.x * (I)blockDim.x + threadIdx.x; index < total; index += (I)blockDim.x * gridDim.x) {
        I x_ = index % width, rest = index / width;
        I y = rest % height;
        rest /= height;
        I c = rest % channels, n = rest / channels;
        const T* source = cols + (long long)c * kh * kw * positions + n * oh * ow;
        T sum = 0;
        for (I i = 0; i < kh; ++i) {
            I a = y + top - i * dh;  // the output row with a·sh + i·dh = y + top, if sh divides
            if (a < 0) continue;
            if (sh > 1) {
                if (a % sh != 0) continue;
                a /= sh;
            }
            if (a >= oh) continue;
            for (I j = 0; j < kw; ++j) {
                I b = x_ + left - j * dw;
                if (b < 0) continue;
                if (sw > 1) {
                    if (b % sw != 0) continue;
                    b /= sw;
                }
                if (b >= ow) continue;
                sum += source[(long long)(i * kw + j) * positions + a * ow + b];
            }
        }
        out[index] = sum;
    }
}
"""

_TYPES = {"float32": "float", "float64": "double"}
_THREADS = 256
_MAX_BLOCKS = 65536  # grid-stride loops cover the rest


@functools.lru_cache(maxsize=None)
def _module():
    import cupy

    names = [f"{kernel}<{type_}, {index}>" for kernel in ("im2col", "col2im") for type_ in _TYPES.values() for index in ("int", "long long")]
    return cupy.RawModule(code=_SOURCE, name_expressions=names)


@functools.lru_cache(maxsize=None)
def _kernel(name, dtype, wide):
    return _module().get_function(f"{name}<{_TYPES[dtype]}, {'long long' if wide else 'int'}>")


def _launch(name, dtype, total, largest, args):
    """Run kernel ``name`` over ``total`` threads; indices are 32-bit unless ``largest`` (the
    largest element count any index reaches) needs more."""
    wide = largest >= 2**31
    integer = np.int64 if wide else np.int32
    blocks = min(-(-total // _THREADS), _MAX_BLOCKS)
    _kernel(name, str(dtype), wide)((blocks,), (_THREADS,), tuple(integer(a) if isinstance(a, int) else a for a in args))


def im2col(x, kh, kw, sh, sw, dh, dw, oh, ow, *, pads, lhs):
    """Column matrix (C·kh·kw, N·oh·ow) of the (C, N, H, W) CuPy array ``x`` (any strides) padded
    by ``pads`` = (top, bottom, left, right) (negative: crop) and dilated by ``lhs`` = (lh, lw)."""
    import cupy

    channels, batch, height, width = x.shape
    with x.device:  # allocate and launch on the input's GPU
        cols = cupy.empty((channels * kh * kw, batch * oh * ow), dtype=x.dtype)
        if cols.size:
            s_c, s_n, s_h, s_w = (np.int64(s // x.itemsize) for s in x.strides)
            total = channels * batch * oh * ow
            largest = max(cols.size, total + _THREADS * _MAX_BLOCKS)
            _launch("im2col", x.dtype, total, largest, (x, cols, total, batch, height, width, s_c, s_n, s_h, s_w,
                                                        kh, kw, sh, sw, dh, dw, pads[0], pads[2], *lhs, oh, ow))
    return cols


def col2im(cols, shape, kh, kw, sh, sw, dh, dw, oh, ow, *, pads):
    """Adjoint of :func:`im2col` without dilation: the (C, N, H, W) sum of the columns' taps for an
    unpadded ``shape`` (C, N, H, W), its memory laid out as (N, C, H, W) (the public layout)."""
    import cupy

    channels, batch, height, width = shape
    with cols.device:
        out = cupy.empty((batch, channels, height, width), dtype=cols.dtype)
        if out.size:
            cols = cupy.ascontiguousarray(cols)
            largest = max(cols.size, out.size + _THREADS * _MAX_BLOCKS)
            _launch("col2im", cols.dtype, out.size, largest, (cols, out, out.size, channels, batch, height, width,
                                                             kh, kw, sh, sw, dh, dw, pads[0], pads[2], oh, ow))
    return out.transpose(1, 0, 2, 3)


@register("im2col", "cupy")
def _im2col(x, w, xp):
    """The im2col primitive: the kernel reads the (N, C, H, W) input through a (C, N, H, W) view."""
    return im2col(x.transpose(1, 0, 2, 3), w.kh, w.kw, w.sh, w.sw, w.dh, w.dw, w.oh, w.ow,
                  pads=(w.top, None, w.left, None), lhs=(w.lh, w.lw))


@register("col2im", "cupy")
def _col2im(cols, shape, w, xp):
    """The col2im primitive (no input dilation: the reference handles that case)."""
    if (w.lh, w.lw) != (1, 1):
        return _reference_col2im(cols, shape, w, xp)
    batch, channels, height, width = shape
    out = col2im(cols, (channels, batch, height, width), w.kh, w.kw, w.sh, w.sw, w.dh, w.dw, w.oh, w.ow,
                 pads=(w.top, None, w.left, None))
    return out.transpose(1, 0, 2, 3)
