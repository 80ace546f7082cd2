"""numba kernels of the Winograd F(2×2, 3×3) data transforms, one pass each.

Same signatures, layouts and results as :mod:`~portaconv.primitives.winograd_reference`: every
value is computed by the same expression in the same order (see the reference's docstring), so
float32 and float64 results are bitwise equal to the reference's, NaN and inf included.

Each kernel runs one (image, channel) plane per ``prange`` iteration:

* ``winograd_input`` reads the unpadded input; the padding is in the index arithmetic (a band of
  4 padded rows is copied into a small zeroed buffer per tile row, then the tiles read it without
  checks). The plane's 16 × th·tw results go to a local buffer first and then to V as 16
  contiguous runs: storing each tile's 16 values straight into V's 16 rows writes 16 streams at
  once (measured slower: docs/performance.md, "Measurements behind the design decisions");
* ``winograd_input_adjoint`` overlap-adds each tile's B dV Bᵀ into a padded plane buffer in tile
  raster order (the reference's reverse tap order gives each pixel the same order of additions)
  and copies the input's pixels out;
* ``winograd_output`` writes the C-contiguous (N, K, oh, ow) output, bias included;
* ``winograd_output_adjoint`` reads the gradient, the overhanging outputs as zeros (and writes
  dM through a plane buffer, as ``winograd_input`` writes V).

Scalars that enter sums have the array's dtype (a float64 literal would turn a float32 sum into a
float64 one); ``fastmath`` is off. The wrappers honour ``portaconv.options(num_threads=...)``.
"""

from __future__ import annotations

import numba
import numpy as np

from .dispatch import register
from .numba_kernels import _kernel
from .window import Window

__all__ = ["winograd_input", "winograd_input_adjoint", "winograd_output", "winograd_output_adjoint"]


def _tiles(w: Window):
    return (w.oh + 1) // 2, (w.ow + 1) // 2


@_kernel
def _input(x, top, left, th, tw, v):
    n, c, height, width = x.shape
    tiles = th * tw
    cols = 2 * tw + 2
    s0, s1 = max(left, 0), min(left + width, cols)  # band columns inside the input
    for plane in numba.prange(n * c):
        b = plane // c
        ch = plane % c
        band = np.zeros((4, cols), x.dtype)
        buf = np.empty((16, tiles), x.dtype)
        base = b * tiles
        for ty in range(th):
            # Rows 2ty − top … 2ty − top + 3, padded: band[i, s] = x[b, ch, 2ty − top + i, s − left].
            for i in range(4):
                r = 2 * ty - top + i
                if r >= 0 and r < height:
                    for s in range(cols):
                        band[i, s] = 0.0
                    for s in range(s0, s1):
                        band[i, s] = x[b, ch, r, s - left]
                else:
                    for s in range(cols):
                        band[i, s] = 0.0
            at = ty * tw
            for tx in range(tw):
                s = 2 * tx
                # Column pass: t{i}{q} = (d B)[i, q].
                t00 = band[0, s] - band[0, s + 2]
                t01 = band[0, s + 1] + band[0, s + 2]
                t02 = band[0, s + 2] - band[0, s + 1]
                t03 = band[0, s + 1] - band[0, s + 3]
                t10 = band[1, s] - band[1, s + 2]
                t11 = band[1, s + 1] + band[1, s + 2]
                t12 = band[1, s + 2] - band[1, s + 1]
                t13 = band[1, s + 1] - band[1, s + 3]
                t20 = band[2, s] - band[2, s + 2]
                t21 = band[2, s + 1] + band[2, s + 2]
                t22 = band[2, s + 2] - band[2, s + 1]
                t23 = band[2, s + 1] - band[2, s + 3]
                t30 = band[3, s] - band[3, s + 2]
                t31 = band[3, s + 1] + band[3, s + 2]
                t32 = band[3, s + 2] - band[3, s + 1]
                t33 = band[3, s + 1] - band[3, s + 3]
                # Row pass: V[4p + q] = (Bᵀ t)[p, q].
                buf[0, at + tx] = t00 - t20
                buf[1, at + tx] = t01 - t21
                buf[2, at + tx] = t02 - t22
                buf[3, at + tx] = t03 - t23
                buf[4, at + tx] = t10 + t20
                buf[5, at + tx] = t11 + t21
                buf[6, at + tx] = t12 + t22
                buf[7, at + tx] = t13 + t23
                buf[8, at + tx] = t20 - t10
                buf[9, at + tx] = t21 - t11
                buf[10, at + tx] = t22 - t12
                buf[11, at + tx] = t23 - t13
                buf[12, at + tx] = t10 - t30
                buf[13, at + tx] = t11 - t31
                buf[14, at + tx] = t12 - t32
                buf[15, at + tx] = t13 - t33
        # Then V's 16 rows of this plane, each one contiguous run (see the module docstring).
        for xi in range(16):
            for t in range(tiles):
                v[xi, ch, base + t] = buf[xi, t]


@numba.njit(cache=True, inline="always")
def _b_pass(v0, v1, v2, v3):
    """(B v)[0..3] = v0, v1 − v2 + v3, v1 + v2 − v0, −v3 (the reference's B rows, in order)."""
    return v0, v1 - v2 + v3, v1 + v2 - v0, -v3


@_kernel
def _input_adjoint(dv, top, left, th, tw, out):
    n, c, height, width = out.shape
    tiles = th * tw
    rows, cols = 2 * th + 2, 2 * tw + 2
    for plane in numba.prange(n * c):
        b = plane // c
        ch = plane % c
        frame = np.zeros((rows, cols), out.dtype)
        base = b * tiles
        for ty in range(th):
            for tx in range(tw):
                col = base + ty * tw + tx
                r = 2 * ty
                s = 2 * tx
                # Row pass per q: dt{i}{q} = (B dV[:, q])[i]; then column pass per i: dd[i] = B dt[i].
                d00, d10, d20, d30 = _b_pass(dv[0, ch, col], dv[4, ch, col], dv[8, ch, col], dv[12, ch, col])
                d01, d11, d21, d31 = _b_pass(dv[1, ch, col], dv[5, ch, col], dv[9, ch, col], dv[13, ch, col])
                d02, d12, d22, d32 = _b_pass(dv[2, ch, col], dv[6, ch, col], dv[10, ch, col], dv[14, ch, col])
                d03, d13, d23, d33 = _b_pass(dv[3, ch, col], dv[7, ch, col], dv[11, ch, col], dv[15, ch, col])
                e0, e1, e2, e3 = _b_pass(d00, d01, d02, d03)
                frame[r, s] += e0
                frame[r, s + 1] += e1
                frame[r, s + 2] += e2
                frame[r, s + 3] += e3
                e0, e1, e2, e3 = _b_pass(d10, d11, d12, d13)
                frame[r + 1, s] += e0
                frame[r + 1, s + 1] += e1
                frame[r + 1, s + 2] += e2
                frame[r + 1, s + 3] += e3
                e0, e1, e2, e3 = _b_pass(d20, d21, d22, d23)
                frame[r + 2, s] += e0
                frame[r + 2, s + 1] += e1
                frame[r + 2, s + 2] += e2
                frame[r + 2, s + 3] += e3
                e0, e1, e2, e3 = _b_pass(d30, d31, d32, d33)
                frame[r + 3, s] += e0
                frame[r + 3, s + 1] += e1
                frame[r + 3, s + 2] += e2
                frame[r + 3, s + 3] += e3
        for h in range(height):
            fr = h + top
            for u in range(width):
                fc = u + left
                if fr >= 0 and fr < rows and fc >= 0 and fc < cols:
                    out[b, ch, h, u] = frame[fr, fc]
                else:
                    out[b, ch, h, u] = 0.0


@_kernel
def _output(m, bias, has_bias, th, tw, out):
    n, k, oh, ow = out.shape
    tiles = th * tw
    for plane in numba.prange(n * k):
        b = plane // k
        ch = plane % k
        base = b * tiles
        for ty in range(th):
            r = 2 * ty
            for tx in range(tw):
                col = base + ty * tw + tx
                s = 2 * tx
                # Row pass: s{p}{b} = (Aᵀ M[:, b])[p]; column pass: y{p}{q} = (s{p} A)[q].
                s00 = m[0, ch, col] + m[4, ch, col] + m[8, ch, col]
                s01 = m[1, ch, col] + m[5, ch, col] + m[9, ch, col]
                s02 = m[2, ch, col] + m[6, ch, col] + m[10, ch, col]
                s03 = m[3, ch, col] + m[7, ch, col] + m[11, ch, col]
                s10 = m[4, ch, col] - m[8, ch, col] - m[12, ch, col]
                s11 = m[5, ch, col] - m[9, ch, col] - m[13, ch, col]
                s12 = m[6, ch, col] - m[10, ch, col] - m[14, ch, col]
                s13 = m[7, ch, col] - m[11, ch, col] - m[15, ch, col]
                y00 = s00 + s01 + s02
                y01 = s01 - s02 - s03
                y10 = s10 + s11 + s12
                y11 = s11 - s12 - s13
                if has_bias:
                    y00 = y00 + bias[ch]
                    y01 = y01 + bias[ch]
                    y10 = y10 + bias[ch]
                    y11 = y11 + bias[ch]
                out[b, ch, r, s] = y00
                if s + 1 < ow:
                    out[b, ch, r, s + 1] = y01
                if r + 1 < oh:
                    out[b, ch, r + 1, s] = y10
                    if s + 1 < ow:
                        out[b, ch, r + 1, s + 1] = y11


@_kernel
def _output_adjoint(grad, th, tw, zero, dm):
    n, k, oh, ow = grad.shape
    tiles = th * tw
    for plane in numba.prange(n * k):
        b = plane // k
        ch = plane % k
        base = b * tiles
        buf = np.empty((16, tiles), grad.dtype)
        for ty in range(th):
            r = 2 * ty
            at = ty * tw
            for tx in range(tw):
                s = 2 * tx
                g00 = grad[b, ch, r, s]
                # ``zero`` has grad's dtype: a float64 0.0 would make the sums below float64.
                g01 = grad[b, ch, r, s + 1] if s + 1 < ow else zero
                g10 = grad[b, ch, r + 1, s] if r + 1 < oh else zero
                g11 = grad[b, ch, r + 1, s + 1] if r + 1 < oh and s + 1 < ow else zero
                # Column pass: h{p}{b} = (dY A ᵀ)[p, b]; row pass: dM[4a + b] = (A h)[a, b].
                h00 = g00
                h01 = g00 + g01
                h02 = g00 - g01
                h03 = -g01
                h10 = g10
                h11 = g10 + g11
                h12 = g10 - g11
                h13 = -g11
                buf[0, at + tx] = h00
                buf[1, at + tx] = h01
                buf[2, at + tx] = h02
                buf[3, at + tx] = h03
                buf[4, at + tx] = h00 + h10
                buf[5, at + tx] = h01 + h11
                buf[6, at + tx] = h02 + h12
                buf[7, at + tx] = h03 + h13
                buf[8, at + tx] = h00 - h10
                buf[9, at + tx] = h01 - h11
                buf[10, at + tx] = h02 - h12
                buf[11, at + tx] = h03 - h13
                buf[12, at + tx] = -h10
                buf[13, at + tx] = -h11
                buf[14, at + tx] = -h12
                buf[15, at + tx] = -h13
        for xi in range(16):  # contiguous stores, as in _input
            for t in range(tiles):
                dm[xi, ch, base + t] = buf[xi, t]


@register("winograd_input", "numpy")
def winograd_input(x, w: Window, xp):
    th, tw = _tiles(w)
    n, c = x.shape[:2]
    v = np.empty((16, c, n * th * tw), dtype=x.dtype)
    if v.size:
        _input(np.ascontiguousarray(x), w.top, w.left, th, tw, v)
    return v


@register("winograd_input_adjoint", "numpy")
def winograd_input_adjoint(grad_v, shape, w: Window, xp):
    th, tw = _tiles(w)
    out = np.empty(tuple(shape), dtype=grad_v.dtype)
    if out.size:
        _input_adjoint(np.ascontiguousarray(grad_v), w.top, w.left, th, tw, out)
    return out


@register("winograd_output", "numpy")
def winograd_output(m, bias, shape, w: Window, xp):
    th, tw = _tiles(w)
    out = np.empty(tuple(shape), dtype=m.dtype)
    if out.size:
        has_bias = bias is not None
        bias = np.ascontiguousarray(bias, dtype=m.dtype) if has_bias else np.zeros(0, dtype=m.dtype)
        _output(np.ascontiguousarray(m), bias, has_bias, th, tw, out)
    return out


@register("winograd_output_adjoint", "numpy")
def winograd_output_adjoint(grad, w: Window, xp):
    th, tw = _tiles(w)
    n, k = grad.shape[:2]
    dm = np.empty((16, k, n * th * tw), dtype=grad.dtype)
    if dm.size:
        _output_adjoint(np.ascontiguousarray(grad), th, tw, grad.dtype.type(0), dm)
    return dm
