"""max_pool2d, avg_pool2d and adaptive_avg_pool2d, forward and backward.

Both reduce over the ``kh·kw`` taps of each window of the padded input (−inf padding for max,
zeros for average); the backwards send each window's gradient back through the same taps:
to the window's first maximum (torch's rule) for max, spread over the window for average.

adaptive_avg_pool2d's windows differ in size; it gathers each window's taps through index tables
(:func:`_adaptive_tables`).
"""

from __future__ import annotations

import functools

from array_api_compat import device as _device

from .. import primitives as P
from ..autograd.graph import differentiable
from .._backend import namespace_of
from .._shapes import _is_int, _pair, pool_output_size
from .._validate import cached_geometry, check_shape
from ..primitives.window import Window
from ._common import batched, unbatch

__all__ = [
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
]


@cached_geometry(shapes=1)
def _pool_geometry(op, shape, kernel_size, stride, padding, dilation, ceil_mode) -> Window:
    kh, kw = _pair(kernel_size, "kernel_size", minimum=1)
    sh, sw = (kh, kw) if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _pair(stride, "stride", minimum=1)
    ph, pw = _pair(padding, "padding", minimum=0)
    dh, dw = _pair(dilation, "dilation", minimum=1)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{op}: padding {(ph, pw)} must be at most half the kernel size {(kh, kw)}")
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"{op}: ceil_mode must be a bool, got {ceil_mode!r}")
    height, width = shape[-2:]
    oh = pool_output_size(height, kh, stride=sh, padding=ph, dilation=dh, ceil_mode=ceil_mode)
    ow = pool_output_size(width, kw, stride=sw, padding=pw, dilation=dw, ceil_mode=ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: kernel size {(kh, kw)} with dilation {(dh, dw)} is larger than the padded input "
            f"{(height + 2 * ph, width + 2 * pw)} (input shape {tuple(shape)})"
        )
    return Window(kh, kw, sh, sw, dh, dw, ph, pw, oh, ow)


def _window_origins(w: Window, device, xp):
    """Input row (oh, 1) and column (1, ow) of each window's first tap (negative in the padding)."""
    rows = xp.reshape(xp.arange(w.oh, dtype=xp.int64, device=device) * w.sh - w.top, (w.oh, 1))
    cols = xp.reshape(xp.arange(w.ow, dtype=xp.int64, device=device) * w.sw - w.left, (1, w.ow))
    return rows, cols


def _flat_indices(taps, w: Window, width, xp):
    """Window-tap index → torch's flat index ``row * W + col`` into the unpadded input."""
    rows, cols = _window_origins(w, _device(taps), xp)
    return (rows + (taps // w.kw) * w.dh) * width + cols + (taps % w.kw) * w.dw


def _taps_from_flat(indices, w: Window, width, xp):
    """torch's flat index → window-tap index (inverse of :func:`_flat_indices`)."""
    rows, cols = _window_origins(w, _device(indices), xp)
    return ((indices // width - rows) // w.dh) * w.kw + (indices % width - cols) // w.dw


@differentiable("input")
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    Padding is ``-inf``. Within a window the first maximum in row-major order wins ties; NaN
    propagates (the last NaN of a window wins its index, as in torch). A dilated window whose taps
    all fall in the padding gives ``-inf`` and torch's index (outside the input); its gradient goes
    to no input element (torch's backward adds it to the next channel).

    Parameters
    ----------
    input : array
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        At most half the kernel size.
    dilation : int or (int, int)
    ceil_mode : bool
        Round the output size up; a last window is kept only if it starts inside the input or the
        left padding.
    return_indices : bool
        Also return torch-compatible flat indices ``row * W + col`` of each maximum.

    Shapes
    ------
    input : (N, C, H, W) or unbatched (C, H, W)
    output, indices : (N, C, oh, ow), ``oh`` from :func:`portaconv.pool_output_size`

    Examples
    --------
    >>> import numpy as np, portaconv.functional as F
    >>> F.max_pool2d(np.arange(16.0).reshape(1, 4, 4), 2)
    array([[[ 5.,  7.],
            [13., 15.]]])
    """
    xp = namespace_of(input)
    x, _, unbatched = batched("max_pool2d", input, xp)
    w = _pool_geometry("max_pool2d", x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    out, taps = P.max_pool(x, w, xp, taps=return_indices)
    if not return_indices:
        return unbatch(out, unbatched)
    flat = _flat_indices(xp.astype(taps, xp.int64), w, x.shape[-1], xp)
    return unbatch(out, unbatched), unbatch(flat, unbatched)


@max_pool2d.defbackward
def max_pool2d_backward(
    grad_output, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *, indices=None
):
    """Gradient of :func:`max_pool2d`: each window's gradient goes to its maximum (summed where
    windows overlap).

    Parameters
    ----------
    grad_output : array
    input, kernel_size, stride, padding, dilation, ceil_mode
        As passed to :func:`max_pool2d` (``return_indices`` is accepted and ignored).
    indices : array, optional, keyword-only
        The indices :func:`max_pool2d` returned; the gradient then goes where they point.

    Shapes
    ------
    grad_output, indices : (N, C, oh, ow)
    returns : ((N, C, H, W),)
    """
    xp = namespace_of(grad_output, input, indices)
    op = "max_pool2d_backward"
    x, grad, unbatched = batched(op, input, xp, grad_output)
    w = _pool_geometry(op, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    expected = (*x.shape[:2], w.oh, w.ow)
    check_shape(op, "grad_output", grad, expected)
    if indices is None:
        return (unbatch(P.max_pool_backward(grad, x, w, xp), unbatched),)
    if not xp.isdtype(indices.dtype, "integral"):
        raise TypeError(f"{op}: indices must have an integer dtype, got {indices.dtype}")
    if unbatched:
        indices = xp.expand_dims(indices, axis=0)
    check_shape(op, "indices", indices, expected)
    taps = _taps_from_flat(xp.astype(indices, xp.int64), w, x.shape[-1], xp)
    return (unbatch(P.max_pool_scatter(grad, taps, x.shape, w, xp), unbatched),)


def _max_pool2d_vjp_forward(needs, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """max_pool2d keeping each window's first-max tap, so the backward scatters to it instead of
    searching the windows again."""
    xp = namespace_of(input)
    x, _, unbatched = batched("max_pool2d", input, xp)
    w = _pool_geometry("max_pool2d", x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    out, taps = P.max_pool(x, w, xp, taps=True)
    residuals = (taps, tuple(x.shape), w, unbatched)
    if not return_indices:
        return unbatch(out, unbatched), residuals
    flat = _flat_indices(xp.astype(taps, xp.int64), w, x.shape[-1], xp)
    return (unbatch(out, unbatched), unbatch(flat, unbatched)), residuals


def _max_pool2d_vjp_backward(residuals, grad_output, needs):
    taps, shape, w, unbatched = residuals
    xp = namespace_of(grad_output)
    grad = xp.expand_dims(grad_output, axis=0) if unbatched else grad_output
    check_shape("max_pool2d_backward", "grad_output", grad, (*shape[:2], w.oh, w.ow))
    return (unbatch(P.max_pool_scatter(grad, taps, shape, w, xp), unbatched),)


max_pool2d.defvjp(_max_pool2d_vjp_forward, _max_pool2d_vjp_backward)


def _avg_divisor(w: Window, height, width, count_include_pad, divisor_override, dtype, device, xp):
    """torch's divisor per output position: the window clipped to the padded input (never the
    ceil_mode overhang), or to the input alone without count_include_pad."""
    if divisor_override is not None:
        return xp.asarray(float(divisor_override), dtype=dtype, device=device)

    def counts(out_size, stride, kernel, pad, size):
        result = []
        for a in range(out_size):
            start = a * stride - pad
            end = min(start + kernel, size + pad)
            if not count_include_pad:
                start, end = max(start, 0), min(end, size)
            result.append(end - start)
        return result

    rows = counts(w.oh, w.sh, w.kh, w.top, height)
    cols = counts(w.ow, w.sw, w.kw, w.left, width)
    return xp.asarray([[float(r * c) for c in cols] for r in rows], dtype=dtype, device=device)


def _avg_geometry(op, shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    if not isinstance(count_include_pad, bool):
        raise TypeError(f"{op}: count_include_pad must be a bool, got {count_include_pad!r}")
    if divisor_override is not None and (not _is_int(divisor_override) or divisor_override == 0):
        raise ValueError(f"{op}: divisor_override must be a non-zero int or None, got {divisor_override!r}")
    return _pool_geometry(op, shape, kernel_size, stride, padding, 1, ceil_mode)


@differentiable("input")
def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    input : array
    kernel_size, stride, padding, ceil_mode
        As in :func:`max_pool2d` (padding is zeros).
    count_include_pad : bool
        Count padded zeros in the divisor (never the ceil_mode overhang past the padding).
    divisor_override : int, optional
        Divide every window sum by this instead.

    Shapes
    ------
    input : (N, C, H, W) or unbatched (C, H, W)
    output : (N, C, oh, ow)
    """
    xp = namespace_of(input)
    op = "avg_pool2d"
    x, _, unbatched = batched(op, input, xp)
    w = _avg_geometry(op, x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    divisor = _avg_divisor(w, *x.shape[-2:], count_include_pad, divisor_override, x.dtype, _device(x), xp)
    return unbatch(P.window_sum(x, w, xp) / divisor, unbatched)


@avg_pool2d.defbackward
def avg_pool2d_backward(
    grad_output, input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    """Gradient of :func:`avg_pool2d`: each window spreads ``grad / divisor`` over its taps.

    Shapes
    ------
    grad_output : (N, C, oh, ow)
    returns : ((N, C, H, W),)
    """
    xp = namespace_of(grad_output, input)
    op = "avg_pool2d_backward"
    x, grad, unbatched = batched(op, input, xp, grad_output)
    w = _avg_geometry(op, x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    check_shape(op, "grad_output", grad, (*x.shape[:2], w.oh, w.ow))
    divisor = _avg_divisor(w, *x.shape[-2:], count_include_pad, divisor_override, x.dtype, _device(x), xp)
    return (unbatch(P.window_spread(grad / divisor, x.shape, w, xp), unbatched),)


@functools.lru_cache(maxsize=256)
def _adaptive_tables(size: int, out: int):
    """torch's adaptive windows along one axis of length ``size`` split into ``out`` windows:
    window ``i`` covers ``[floor(i·size/out), ceil((i+1)·size/out))``.

    Returns ``(lengths, forward, inverse)``: the window lengths, and two padded gather tables
    ``(table, valid)`` (nested lists of ints and bools, one row per result position):
    ``forward`` lists each window's input positions, ``inverse`` each input position's windows.
    Padded entries repeat the last valid index and are masked off.
    """
    starts = [(i * size) // out for i in range(out)]
    ends = [-(-((i + 1) * size) // out) for i in range(out)]
    holders = [[] for _ in range(size)]  # windows are contiguous and cover [0, size)
    for i, (start, end) in enumerate(zip(starts, ends)):
        for position in range(start, end):
            holders[position].append(i)

    def padded(rows):
        width = max(len(r) for r in rows)
        return [r + [r[-1]] * (width - len(r)) for r in rows], [[k < len(r) for k in range(width)] for r in rows]

    forward = padded([list(range(start, end)) for start, end in zip(starts, ends)])
    return [e - s for s, e in zip(starts, ends)], forward, padded(holders)


def _gather_sum(v, table, valid, xp):
    """``out[..., p] = sum_k v[..., table[p][k]]`` over the ``valid[p][k]`` entries along the last
    axis: (..., L) → (..., P). Masked by ``where``, so a NaN or inf reaches only its own windows."""
    rows, width = len(table), len(table[0])
    device = _device(v)
    index = xp.asarray([t for row in table for t in row], dtype=xp.int64, device=device)
    taken = xp.reshape(xp.take(v, index, axis=v.ndim - 1), (*v.shape[:-1], rows, width))
    if not all(all(row) for row in valid):
        mask = xp.asarray(valid, dtype=xp.bool, device=device)
        taken = xp.where(mask, taken, xp.zeros((), dtype=v.dtype, device=device))
    return xp.sum(taken, axis=-1)


def _separable_sum(v, rows, cols, xp):
    """:func:`_gather_sum` along the width with ``cols``, then along the height with ``rows``:
    (N, C, a, b) → (N, C, len(rows[0]), len(cols[0]))."""
    v = _gather_sum(v, *cols, xp)
    v = _gather_sum(xp.permute_dims(v, (0, 1, 3, 2)), *rows, xp)
    return xp.permute_dims(v, (0, 1, 3, 2))


@cached_geometry(shapes=1)
def _adaptive_geometry(op, shape, output_size):
    """(oh, ow, divisor rows and columns, row tables, column tables) of an adaptive pooling."""
    pair = (output_size, output_size) if _is_int(output_size) else output_size
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(v is None or _is_int(v) for v in pair)):
        raise TypeError(f"{op}: output_size must be an int or a pair of ints (or None entries), got {output_size!r}")
    height, width = shape[-2:]
    if height < 1 or width < 1:
        raise ValueError(f"{op}: input must have a non-zero height and width, got shape {tuple(shape)}")
    oh, ow = (height if pair[0] is None else int(pair[0])), (width if pair[1] is None else int(pair[1]))
    if oh < 1 or ow < 1:
        raise ValueError(f"{op}: output_size must be positive, got {output_size!r}")
    row_lengths, *rows = _adaptive_tables(height, oh)
    col_lengths, *cols = _adaptive_tables(width, ow)
    return oh, ow, [[float(r * c) for c in col_lengths] for r in row_lengths], rows, cols


@differentiable("input")
def adaptive_avg_pool2d(input, output_size):
    """2-D adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Output position ``(i, j)`` averages rows ``[floor(i·H/oh), ceil((i+1)·H/oh))`` and columns
    ``[floor(j·W/ow), ceil((j+1)·W/ow))``: windows may differ in size and overlap (always, when the
    output is larger than the input). Each window's taps are gathered through precomputed index
    tables (width first, then height) and summed, then divided by the window's area.

    Parameters
    ----------
    input : array
    output_size : int or (int or None, int or None)
        ``(oh, ow)``; an int means ``(n, n)``, a None entry keeps the input's size on that axis.

    Shapes
    ------
    input : (N, C, H, W) or unbatched (C, H, W)
    output : (N, C, oh, ow)
    """
    xp = namespace_of(input)
    op = "adaptive_avg_pool2d"
    x, _, unbatched = batched(op, input, xp)
    _, _, divisor, rows, cols = _adaptive_geometry(op, x.shape, output_size)
    total = _separable_sum(x, rows[0], cols[0], xp)
    return unbatch(total / xp.asarray(divisor, dtype=x.dtype, device=_device(x)), unbatched)


@adaptive_avg_pool2d.defbackward
def adaptive_avg_pool2d_backward(grad_output, input, output_size):
    """Gradient of :func:`adaptive_avg_pool2d`.

    ``out[i, j] = sum_{h in R_i, w in C_j} x[h, w] / (|R_i| |C_j|)`` gives
    ``dL/dx[h, w] = sum_{i : h in R_i} sum_{j : w in C_j} g[i, j] / (|R_i| |C_j|)``: the same
    separable gather-and-sum with the inverse tables (each input row's windows, each input
    column's windows).

    Shapes
    ------
    grad_output : (N, C, oh, ow)
    returns : ((N, C, H, W),)
    """
    xp = namespace_of(grad_output, input)
    op = "adaptive_avg_pool2d_backward"
    x, grad, unbatched = batched(op, input, xp, grad_output)
    oh, ow, divisor, rows, cols = _adaptive_geometry(op, x.shape, output_size)
    check_shape(op, "grad_output", grad, (*x.shape[:2], oh, ow))
    scaled = grad / xp.asarray(divisor, dtype=grad.dtype, device=_device(grad))
    return (unbatch(_separable_sum(scaled, rows[1], cols[1], xp), unbatched),)
